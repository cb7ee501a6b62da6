"""Render kohya's two TOML files from a dataset, a model preset and a GPU preset.

jinja2 (StrictUndefined) writes the commented text from templates/; tomlkit applies
`--set` overrides so the comments survive; the result is validated against kohya's
schema and linted before anything is written.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

from kohyagen.errors import ConfigError, DatasetError, LintFailed, ModelNotFound
from kohyagen.findings import Finding, Severity
from kohyagen.layout import Subset, TrainDirLayout, parse_folder_name, scan_train_dir
from kohyagen.overrides import apply_overrides, parse_override
from kohyagen.presets import GpuPreset, ModelPreset, get_gpu, get_model, training_settings
from kohyagen.resources import templates_dir
from kohyagen.schema import TomlDocument, flatten_training_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SEED = 42
VALIDATION_SEED = 42
# Below this many images a validation split costs too much training data.
VALIDATION_MIN_IMAGES = 20
VALIDATION_SPLIT = 0.1
MAX_EPOCHS = 100
TARGET_CHECKPOINTS = 10
NEGATIVE_PROMPT = "lowres, blurry, worst quality, low quality, jpeg artifacts, watermark"
MODEL_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".sft")


@dataclass(frozen=True)
class RenderedConfigs:
    training_text: str
    dataset_text: str
    training_path: Path
    dataset_path: Path
    sample_prompts_text: str | None
    training: dict[str, Any]  # flat, as kohya will see it
    notes: tuple[str, ...] = ()
    dataset: dict[str, Any] = field(default_factory=dict)
    sample_prompts_path: Path | None = None
    plan: dict[str, Any] = field(default_factory=dict)  # images, repeats, epochs, steps
    findings: tuple[Finding, ...] = ()

    @property
    def paths(self) -> list[Path]:
        out = [self.training_path, self.dataset_path]
        if self.sample_prompts_path is not None:
            out.append(self.sample_prompts_path)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "training_path": str(self.training_path),
            "dataset_path": str(self.dataset_path),
            "sample_prompts_path": str(self.sample_prompts_path)
            if self.sample_prompts_path
            else None,
            "training": self.training,
            "dataset": self.dataset,
            "plan": self.plan,
            "notes": list(self.notes),
            "findings": [f.to_dict() for f in self.findings],
        }


# --- dataset ------------------------------------------------------------------------


def load_train_dir(dataset: str | Path) -> TrainDirLayout:
    """A kohya train dir (parent of N_name/ folders) with at least one image."""
    root = Path(dataset).expanduser().resolve()
    layout = scan_train_dir(root)
    if not layout.subsets:
        if layout.loose_images and parse_folder_name(root.name):
            raise DatasetError(
                "this is a subset folder; kohya needs its parent (the folder holding N_name/)",
                path=root,
                hint=f"pass {root.parent}",
            )
        if layout.loose_images:
            raise DatasetError(
                "a plain folder of images, not a kohya train dir with N_name/ folders",
                path=root,
                hint=f"run `kohyagen dataset prepare {root} OUT --concept NAME` first, "
                "then pass OUT",
            )
        raise DatasetError(
            "no N_name/ folders with images (kohya would find no data)",
            path=root,
            hint="pass the folder that holds e.g. 10_sks/, or run `kohyagen dataset prepare`",
        )
    if layout.image_count == 0:
        raise DatasetError(
            "the N_name/ folders hold no images kohya can read",
            path=root,
            hint="kohya reads .png .jpg .jpeg .webp .bmp",
        )
    return layout


def caption_tag_counts(subsets: tuple[Subset, ...], extension: str) -> Counter[str]:
    """How often each comma-separated tag appears in the first line of the captions."""
    counts: Counter[str] = Counter()
    for subset in subsets:
        for path in subset.caption_files(extension):
            try:
                first = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            line = first[0] if first else ""
            counts.update({t.strip() for t in line.split(",") if t.strip()})
    return counts


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", text.strip()).strip("_")
    return name or "lora"


def default_name(layout: TrainDirLayout, name: str | None = None) -> str:
    """The LoRA name: as given, else the first folder's class tokens, else the folder name."""
    tokens = next((s.class_tokens for s in layout.subsets if s.class_tokens), "")
    return _safe_name(name or tokens or layout.root.name)


def _resolve_base_model(base_model: str | None, model: ModelPreset, cwd: Path) -> tuple[str, str]:
    if base_model is None:
        return model.default_base_model, "the preset's default base model (a Hugging Face id)"
    text = os.path.expanduser(base_model)
    path = Path(text) if Path(text).is_absolute() else cwd / text
    if path.exists():
        return str(path.resolve()), "the base model given (absolute, so kohya finds it anywhere)"
    looks_local = (
        text.startswith((".", "/", "~"))
        or text.lower().endswith(MODEL_FILE_SUFFIXES)
        or text.count("/") != 1
        or "\\" in text
    )
    if looks_local:
        raise ModelNotFound(
            "base model not found",
            path=path,
            hint="give a .safetensors/.ckpt file, a diffusers folder, or a Hugging Face id "
            "like owner/name",
        )
    return text, "the Hugging Face model id given (kohya downloads it on first use)"


# --- the plan -----------------------------------------------------------------------


def _bucket_range(resolution: int, steps: int = 64) -> tuple[int, int]:
    """min/max bucket sizes kohya accepts: multiples of steps around the resolution."""
    low = max(steps, (resolution // 2) // steps * steps)
    high = resolution * 2
    return low, high


def _train_images(subsets: tuple[Subset, ...], split: float) -> tuple[int, int]:
    """(training images, images x repeats) after kohya's per-subset validation split."""
    images = repeated = 0
    for subset in subsets:
        n = len(subset.images)
        kept = math.ceil(n * (1 - split)) if split else n
        images += kept
        repeated += kept * subset.repeats
    return images, repeated


def _choose_epochs(model: ModelPreset, per_epoch_samples: int) -> int:
    return max(1, min(MAX_EPOCHS, round(model.target_samples / max(1, per_epoch_samples))))


# --- rendering ----------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    return tomlkit.item(value).as_string()


def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["toml"] = _toml_value
    return env


def render_configs(
    dataset: str | Path,
    *,
    model: str | ModelPreset,
    gpu: str | GpuPreset,
    out_dir: str | Path,
    name: str | None = None,
    trigger: str | None = None,
    base_model: str | None = None,
    overrides=(),
    samples: bool = False,
    epochs: int | None = None,
    attention: str = "sdpa",
    cwd: str | Path | None = None,
) -> RenderedConfigs:
    """Both kohya TOMLs (and sample prompts) as text; nothing is written here."""
    model = get_model(model) if isinstance(model, str) else model
    gpu = get_gpu(gpu) if isinstance(gpu, str) else gpu
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    layout = load_train_dir(dataset if Path(dataset).is_absolute() else cwd / dataset)
    settings = training_settings(model, gpu, attention=attention)
    out_dir = (cwd / Path(out_dir).expanduser()).resolve()
    if epochs is not None and epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    notes: list[str] = []

    first_tokens = next((s.class_tokens for s in layout.subsets if s.class_tokens), "")
    name = default_name(layout, name)
    trigger = (trigger or "").strip() or None
    prompt_word = trigger or first_tokens or name
    base, base_why = _resolve_base_model(base_model, model, cwd)

    # Captions: kohya's default extension is .caption; use what is on disk.
    caption_ext = layout.detect_caption_extension()
    ext_counts = layout.caption_extension_counts()
    if caption_ext:
        ext_why = (
            f"{ext_counts[caption_ext]} of {layout.image_count} images have {caption_ext} "
            "captions (kohya's default .caption would ignore them)"
        )
        if ext_counts[caption_ext] < layout.image_count:
            notes.append(
                f"{layout.image_count - ext_counts[caption_ext]} images have no "
                f"{caption_ext} caption; kohya uses their folder's class tokens instead"
            )
    else:
        caption_ext = ".txt"
        ext_why = (
            "no caption files yet, so kohya uses each folder's class tokens; .txt is what "
            "`kohyagen tag` writes"
        )
        notes.append("no caption files: every image is captioned by its folder's class tokens")
    tag_counts = caption_tag_counts(layout.subsets, caption_ext)
    if trigger and tag_counts:
        with_trigger = sum(
            1
            for s in layout.subsets
            for p in s.caption_files(caption_ext)
            if trigger in p.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        )
        captions = sum(len(s.caption_files(caption_ext)) for s in layout.subsets)
        if with_trigger < captions:
            notes.append(
                f"{captions - with_trigger} of {captions} captions lack the trigger "
                f"{trigger!r}; add it (e.g. `kohyagen tag --trigger {trigger}`)"
            )

    # Validation split, then steps.
    split = VALIDATION_SPLIT if layout.image_count >= VALIDATION_MIN_IMAGES else 0.0
    if not split:
        notes.append(
            f"{layout.image_count} images: no validation split (needs {VALIDATION_MIN_IMAGES}+)"
        )
    train_images, per_epoch = _train_images(layout.subsets, split)
    batch = settings["train_batch_size"].value
    if batch > per_epoch:
        batch = max(1, per_epoch)
        settings["train_batch_size"] = type(settings["train_batch_size"])(
            batch, f"capped at the {per_epoch} images x repeats of one epoch"
        )
    chosen_epochs = epochs or _choose_epochs(model, per_epoch)
    steps_per_epoch = math.ceil(per_epoch / batch)
    total_steps = chosen_epochs * steps_per_epoch
    samples_seen = chosen_epochs * per_epoch
    if epochs is None and samples_seen < model.min_samples:
        notes.append(
            f"only {samples_seen} image views in {chosen_epochs} epochs (aim "
            f"{model.min_samples}-{model.max_samples}); raise the N_ repeats of the folders"
        )
    if epochs is None and samples_seen > model.max_samples:
        notes.append(
            f"{per_epoch} images x repeats per epoch: one epoch already exceeds "
            f"{model.max_samples} image views; lower the N_ repeats of the folders"
        )
    save_every = max(1, math.ceil(chosen_epochs / TARGET_CHECKPOINTS))
    warmup = round(total_steps * 0.05)

    values: dict[str, Any] = {}
    why: dict[str, str] = {}

    def put(key: str, value: Any, reason: str) -> None:
        values[key] = value
        why[key] = reason

    put("pretrained_model_name_or_path", base, base_why)
    if model.v2:
        put("v2", True, f"{model.label} is a v2 model")
    if model.v_parameterization:
        put("v_parameterization", True, "768-v models predict v, not noise")
    put("network_module", "networks.lora", "kohya's LoRA (kohya has no default; None crashes)")
    put("network_dim", model.network_dim, "LoRA rank: enough capacity for a subject or a style")
    put("network_alpha", float(model.network_alpha), "alpha = dim/2 scales updates by 0.5")
    unet_only = settings["network_train_unet_only"]
    if unet_only.value:
        put("network_train_unet_only", True, unet_only.reason)
    opt = settings["optimizer_type"]
    put("optimizer_type", opt.value, opt.reason)
    put("learning_rate", model.learning_rate, "base learning rate (= unet_lr)")
    put("unet_lr", model.unet_lr, f"usual {model.name} LoRA U-Net learning rate")
    if not unet_only.value:
        put(
            "text_encoder_lr",
            [model.text_encoder_lr],
            "lower than the U-Net's: text encoders overfit fast (a list, as kohya parses it)",
        )
    put("lr_scheduler", "cosine", "decays smoothly, so late checkpoints are the settled ones")
    put("lr_warmup_steps", warmup, "5% of the steps: avoids a rough start")
    put("min_snr_gamma", 5.0, "Min-SNR weighting: faster, steadier convergence")
    put(
        "max_train_epochs",
        chosen_epochs,
        f"given with --epochs ({samples_seen} image views, {total_steps} steps)"
        if epochs
        else f"{per_epoch} images x repeats per epoch -> {samples_seen} image views, "
        f"{total_steps} steps at batch {batch} (aim about {model.target_samples} views)",
    )
    for key in ("train_batch_size", "gradient_checkpointing"):
        put(key, settings[key].value, settings[key].reason)
    put("seed", SEED, "fixed seed: reruns are comparable")
    put("max_data_loader_n_workers", 2, "latents are cached, so few loader workers are needed")
    put("persistent_data_loader_workers", True, "keep workers between epochs (faster epochs)")
    for key in ("mixed_precision", attention, "cache_latents"):
        put(key, settings[key].value, settings[key].reason)
    if "cache_text_encoder_outputs" in settings and settings["cache_text_encoder_outputs"].value:
        s = settings["cache_text_encoder_outputs"]
        put("cache_text_encoder_outputs", True, s.reason)
    if settings["fp8_base"].value:
        put("fp8_base", True, settings["fp8_base"].reason)
    training_path = out_dir / "training_config.toml"
    dataset_path = out_dir / "dataset_config.toml"
    prompts_path = out_dir / "sample_prompts.txt"
    put("dataset_config", str(dataset_path), "the dataset file next to this one")
    put(
        "resolution",
        str(model.resolution),
        f'{model.name} native size (a string here; kohya splits it as "W,H")',
    )
    put("output_dir", str(out_dir / "output"), "checkpoints go here")
    put("output_name", name, "checkpoint file names: NAME-000002.safetensors ... NAME.safetensors")
    put("save_model_as", "safetensors", "safe and loadable everywhere")
    put("save_precision", settings["save_precision"].value, settings["save_precision"].reason)
    put(
        "save_every_n_epochs",
        save_every,
        f"about {min(chosen_epochs, TARGET_CHECKPOINTS)} checkpoints to pick the best from",
    )
    put("logging_dir", str(out_dir / "logs"), "TensorBoard logs, read by `kohyagen report`")
    put("log_with", "tensorboard", "loss curves for `kohyagen report` and `pick`")
    put("log_prefix", f"{name}_", "names each run's log folder after the LoRA")
    prompts_text = None
    if samples:
        prompts_text = sample_prompts(prompt_word, tag_counts, model, exclude=(first_tokens,))
        put("sample_prompts", str(prompts_path), "preview prompts: trigger + most frequent tags")
        put("sample_every_n_epochs", save_every, "a preview image for every saved checkpoint")
        put("sample_sampler", "euler_a", "a good sampler at 28 steps")

    low, high = _bucket_range(model.resolution)
    general: dict[str, Any] = {}
    gwhy: dict[str, str] = {}

    def gput(key: str, value: Any, reason: str) -> None:
        general[key] = value
        gwhy[key] = reason

    gput("resolution", model.resolution, f"{model.name} native size (an integer in this file)")
    gput("enable_bucket", True, "train each image near its own aspect ratio instead of cropping")
    gput("min_bucket_reso", low, "smallest bucket side (kohya asserts it is <= resolution)")
    gput("max_bucket_reso", high, "largest bucket side (kohya asserts it is >= resolution)")
    gput("bucket_reso_steps", 64, "bucket sides in steps of 64 (what kohya requires)")
    gput("bucket_no_upscale", True, "never upscale small images (they get a smaller bucket)")
    gput("caption_extension", caption_ext, ext_why)
    cached_te = bool(values.get("cache_text_encoder_outputs"))
    if not cached_te:
        gput("shuffle_caption", True, "shuffle tags each step so no tag order is memorised")
        gput("keep_tokens", 1, "keep the first tag (the trigger) in front when shuffling")
    if split:
        gput(
            "validation_split",
            split,
            f"{layout.image_count} images: hold out 10% to measure validation loss",
        )
        gput("validation_seed", VALIDATION_SEED, "fixed seed: the same images are held out")
    subsets_ctx = []
    for subset in layout.subsets:
        if not subset.images:
            notes.append(f"{subset.name}: no images, left out")
            continue
        captioned = len(subset.caption_files(caption_ext))
        subsets_ctx.append(
            {
                "image_dir": str(subset.path),
                "num_repeats": subset.repeats,
                "class_tokens": subset.class_tokens,
                "note": f"{subset.name}: {len(subset.images)} images ({captioned} captioned), "
                f"{subset.repeats} repeats",
            }
        )

    env = _environment()
    ctx = {
        "script": model.script,
        "name": name,
        "model": model,
        "gpu": gpu,
        "training_path": str(training_path),
        "dataset_path": str(dataset_path),
        "dataset_root": str(layout.root),
    }
    training_text = env.get_template("training_config.toml.j2").render(
        values=values, why=why, **ctx
    )
    dataset_text = env.get_template("dataset_config.toml.j2").render(
        general=general, why=gwhy, subsets=subsets_ctx, **ctx
    )
    training_text, dataset_text = _apply_overrides(
        training_text, dataset_text, model.script_name, overrides
    )
    training_doc = TomlDocument(training_path, training_text, tomllib.loads(training_text))
    dataset_doc = TomlDocument(dataset_path, dataset_text, tomllib.loads(dataset_text))
    flat, _ = flatten_training_config(training_doc.data)
    findings = _validate(training_doc, dataset_doc, prompts_path if samples else None)
    final_batch = flat.get("train_batch_size", 1)
    final_epochs = flat.get("max_train_epochs", chosen_epochs)
    plan = {
        "model": model.name,
        "script": model.script,
        "gpu": gpu.name,
        "images": layout.image_count,
        "train_images": train_images,
        "images_x_repeats": per_epoch,
        "validation_split": dataset_doc.data.get("general", {}).get("validation_split", 0.0),
        "batch_size": final_batch,
        "epochs": final_epochs,
        "steps_per_epoch": math.ceil(per_epoch / final_batch),
        "total_steps": final_epochs * math.ceil(per_epoch / final_batch),
        "save_every_n_epochs": flat.get("save_every_n_epochs"),
        "price_per_hour": gpu.price_per_hour,
        "trigger": prompt_word,
    }
    return RenderedConfigs(
        training_text=training_text,
        dataset_text=dataset_text,
        training_path=training_path,
        dataset_path=dataset_path,
        sample_prompts_text=prompts_text,
        training=flat,
        notes=tuple(notes),
        dataset=dataset_doc.data,
        sample_prompts_path=prompts_path if samples else None,
        plan=plan,
        findings=tuple(findings),
    )


def _apply_overrides(
    training_text: str, dataset_text: str, script: str, overrides
) -> tuple[str, str]:
    parsed = []
    for item in overrides:
        parsed.extend(parse_override(item if isinstance(item, str) else "=".join(item), script))
    if not parsed:
        return training_text, dataset_text
    training_doc = tomlkit.parse(training_text)
    dataset_doc = tomlkit.parse(dataset_text)
    apply_overrides(training_doc, dataset_doc, parsed)
    return tomlkit.dumps(training_doc), tomlkit.dumps(dataset_doc)


def _validate(
    training: TomlDocument, dataset: TomlDocument, prompts_path: Path | None
) -> list[Finding]:
    from kohyagen.lint import lint_dataset_config, lint_training_config

    findings = lint_training_config(training, dataset=dataset) + lint_dataset_config(
        dataset, training=training
    )
    # Files this render is about to write are not missing.
    pending = {str(training.path), str(dataset.path)}
    if prompts_path is not None:
        pending.add(str(prompts_path))
    findings = [f for f in findings if not (f.code == "file-not-found" and f.key in pending)]
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors:
        first = errors[0]
        raise LintFailed(
            f"the rendered config is invalid: {first.key}: {first.message}",
            errors,
            hint=first.fix or "check the --set values",
        )
    return findings


def sample_prompts(
    trigger: str, tag_counts: Counter[str], model: ModelPreset, *, exclude=(), count: int = 3
) -> str:
    """Preview prompts in kohya's format: the trigger plus the most frequent caption tags."""
    skip = {trigger.lower(), *(e.lower() for e in exclude if e)}
    # Ties broken by name so the file is the same on every run.
    ranked = sorted(tag_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    tags = [t for t, _ in ranked if t.lower() not in skip]
    size = model.resolution
    options = f"--n {NEGATIVE_PROMPT} --w {size} --h {size} --l {model.sample_cfg:g} "
    options += f"--s {model.sample_steps}"
    bodies = [[trigger, *tags[:6]], [trigger, *tags[:3]], [trigger]]
    lines = [
        "# kohyagen sample prompts: the trigger and the dataset's most frequent caption tags.",
        "# One prompt per line; --n negative, --w/--h size, --d seed, --l CFG, --s steps.",
    ]
    seen = set()
    for i, body in enumerate(bodies[:count], start=1):
        text = ", ".join(body)
        if text in seen:
            continue
        seen.add(text)
        lines.append(f"{text} {options} --d {i}")
    return "\n".join(lines) + "\n"


# --- writing ------------------------------------------------------------------------


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_configs(rendered: RenderedConfigs, *, force: bool = False) -> list[Path]:
    """Write the files atomically; refuse to replace existing ones unless force."""
    files = [
        (rendered.training_path, rendered.training_text),
        (rendered.dataset_path, rendered.dataset_text),
    ]
    if rendered.sample_prompts_path is not None and rendered.sample_prompts_text is not None:
        files.append((rendered.sample_prompts_path, rendered.sample_prompts_text))
    if not force:
        existing = [p for p, _ in files if p.exists()]
        if existing:
            raise ConfigError(
                "already exists; not overwriting it",
                path=existing[0],
                hint="pass --force to replace it, or -o another folder",
            )
    for path, text in files:
        _atomic_write(path, text)
    return [p for p, _ in files]
