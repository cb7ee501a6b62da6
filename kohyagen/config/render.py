"""Render kohya's two TOML files from a dataset, a model preset and a GPU preset.

jinja2 (StrictUndefined) writes the commented text from templates/; tomlkit applies
`--set` overrides so the comments survive; the result is validated against kohya's
schema and linted before anything is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomlkit

from kohyagen.atomic import write_text_atomic
from kohyagen.config.family_settings import settings_for
from kohyagen.config.overrides import Override
from kohyagen.config.presets import (
    GpuPreset,
    ModelPreset,
    Setting,
    get_gpu,
    get_model,
)
from kohyagen.config.render_check import lint_rendered, summarize_plan
from kohyagen.config.render_family import FILE_REASONS, family_choices, model_variant
from kohyagen.config.render_fixes import allow_upscale_if_needed, coupled_overrides
from kohyagen.config.render_flags import (
    apply_text_overrides,
    bucket_range_overrides,
    epochs_from_overrides,
    family_files,
    file_overrides,
    parse_overrides,
)
from kohyagen.config.render_inputs import (
    clean_trigger,
    default_name,
    load_train_dir,
    resolve_base_model,
)
from kohyagen.config.render_training import training_choices
from kohyagen.config.render_values import (
    Choices,
    StepPlan,
    choose_captions,
    dataset_choices,
    plan_steps,
)
from kohyagen.config.sample_prompts import sample_prompts
from kohyagen.config.schema import TomlDocument, flatten_training_config
from kohyagen.errors import ConfigError
from kohyagen.findings import Finding
from kohyagen.resources import templates_dir
from kohyagen.toml_compat import tomllib

if TYPE_CHECKING:
    from collections import Counter

    import jinja2

    from kohyagen.dataset.layout import TrainDirLayout


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


# --- rendering ----------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    return tomlkit.item(value).as_string()


def _environment() -> jinja2.Environment:
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
    overrides: Iterable[str | Sequence[str]] = (),
    samples: bool = True,
    epochs: int | None = None,
    attention: str = "sdpa",
    cwd: str | Path | None = None,
    tables: Any = None,
    model_files: dict[str, str] | None = None,
    fetch: bool = False,
    on_progress: Callable[[str], None] | None = None,
) -> RenderedConfigs:
    """Both kohya TOMLs (and sample prompts) as text; nothing is written here.

    tables: a kohya_tables.KohyaTables of the sd-scripts checkout that will run, to check
    the result against its own options (default: the bundled tables).
    model_files (DiT families): role or kohya option -> path or "hf:" hub file; fetch
    downloads the family's public files that are not given.
    """
    model = get_model(model) if isinstance(model, str) else model
    gpu = get_gpu(gpu) if isinstance(gpu, str) else gpu
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    trigger = clean_trigger(trigger)
    layout = load_train_dir(dataset if Path(dataset).is_absolute() else cwd / dataset)
    out_dir = _output_dir(out_dir, cwd)
    if epochs is not None and epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    notes: list[str] = []
    parsed, set_files = file_overrides(model, parse_overrides(overrides, model.script_name))
    files = family_files(
        model, base_model, {**set_files, **(model_files or {})}, cwd, fetch, on_progress
    )
    settings = _settings(model, gpu, attention, files, notes)
    first_tokens = next((s.class_tokens for s in layout.subsets if s.class_tokens), "")
    name = default_name(layout, name)
    captions = choose_captions(layout, trigger, notes)
    set_training, plan = _plan_with_overrides(model, layout, settings, parsed, epochs, notes)
    training_choice = training_choices(
        model, gpu, settings, plan, base_model=_base_model(files, base_model, model, cwd),
        name=name, out_dir=out_dir, attention=attention, samples=samples,
    )  # fmt: skip
    if model.is_dit:
        family_choices(training_choice, model, settings, files)
    cached_te = bool(training_choice.values.get("cache_text_encoder_outputs"))
    general, subsets_ctx = dataset_choices(
        model, layout, captions, plan, cached_text_encoder=cached_te, notes=notes
    )
    prompt_word = trigger or first_tokens or name
    prompts_text = (_prompts(model, prompt_word, captions.tag_counts, first_tokens, set_training)
                    if samples else None)  # fmt: skip
    texts = _render_texts(model, gpu, name, out_dir, layout, training_choice, general, subsets_ctx)
    return _finish(texts, parsed, out_dir, samples, prompts_text, notes, model, gpu, layout, plan,
                   prompt_word, tables)  # fmt: skip


def _plan_with_overrides(
    model: ModelPreset, layout: TrainDirLayout, settings: dict[str, Setting],
    parsed: list[Override], epochs: int | None, notes: list[str],
) -> tuple[dict[str, Any], StepPlan]:  # fmt: skip
    """The step plan, and the --set values of the training config (parsed gains the
    bucket-range and coupled overrides they imply)."""
    # Values the plan derives others from (save interval, warmup, bucket range) are taken
    # from --set too, so that an override does not leave them computed for another run.
    set_training = {ov.key: ov.value for ov in parsed if ov.target == "training"}
    epochs = epochs_from_overrides(parsed, epochs, settings)
    parsed += bucket_range_overrides(parsed)
    parsed += coupled_overrides(parsed)
    plan = plan_steps(model, layout, settings, epochs, notes)
    if isinstance(set_training.get("save_every_n_epochs"), int):
        # samples follow the checkpoints, also when --set moves the save interval
        plan = dataclasses.replace(plan, save_every=set_training["save_every_n_epochs"])
    return set_training, plan


def _base_model(
    files: dict[str, str], base_model: str | None, model: ModelPreset, cwd: Path
) -> tuple[str, str]:
    """The base model and why: the family's resolved file, else --base-model or the preset's."""
    base = files.get("pretrained_model_name_or_path")
    if base:
        return base, FILE_REASONS["pretrained_model_name_or_path"]
    return resolve_base_model(base_model, model, cwd)


def _prompts(
    model: ModelPreset, word: str, tag_counts: Counter[str], first_tokens: str,
    set_training: dict[str, Any],
) -> str:  # fmt: skip
    """The sample prompts, sized by the first number of the resolution --set gives."""
    size = str(set_training.get("resolution") or "").split(",")[0].strip()
    return sample_prompts(word, tag_counts, model, exclude=(first_tokens,),
                          size=int(size) if size.isdigit() else None)  # fmt: skip


def _settings(
    model: ModelPreset, gpu: GpuPreset, attention: str, files: dict[str, str], notes: list[str]
) -> dict[str, Setting]:
    """The planner's settings (for SD3 with the variant read from the weights); its notes
    (keys "note:...") go to the render's notes."""
    memory = model_variant(model, files, notes) if model.is_dit else None
    settings = settings_for(model, gpu, attention=attention, memory=memory)
    notes += [s.reason for k, s in settings.items() if k.startswith("note:")]
    return {k: v for k, v in settings.items() if not k.startswith("note:")}


def _output_dir(out_dir: str | Path, cwd: Path) -> Path:
    out = (cwd / Path(out_dir).expanduser()).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(
            "the output folder for the configs is a file", path=out, hint="pass a folder to -o"
        )
    return out


def _render_texts(
    model: ModelPreset, gpu: GpuPreset, name: str, out_dir: Path, layout: TrainDirLayout,
    training_choice: Choices, general: Choices, subsets_ctx: list[dict[str, Any]],
) -> tuple[str, str]:  # fmt: skip
    env = _environment()
    ctx = {
        "script": model.script,
        "name": name,
        "model": model,
        "gpu": gpu,
        "training_path": str(out_dir / "training_config.toml"),
        "dataset_path": str(out_dir / "dataset_config.toml"),
        "dataset_root": str(layout.root),
    }
    training_text = env.get_template("training_config.toml.j2").render(
        values=training_choice.values, why=training_choice.why, **ctx
    )
    dataset_text = env.get_template("dataset_config.toml.j2").render(
        general=general.values, why=general.why, subsets=subsets_ctx, **ctx
    )
    return training_text, dataset_text


def _finish(
    texts: tuple[str, str], parsed: list[Override], out_dir: Path, samples: bool,
    prompts_text: str | None, notes: list[str], model: ModelPreset, gpu: GpuPreset,
    layout: TrainDirLayout, plan: StepPlan, prompt_word: str, tables: Any = None,
) -> RenderedConfigs:  # fmt: skip
    """Apply --set, validate, and collect the result."""
    training_path = out_dir / "training_config.toml"
    dataset_path = out_dir / "dataset_config.toml"
    prompts_path = out_dir / "sample_prompts.txt"
    training_text, dataset_text = apply_text_overrides(*texts, parsed)
    dataset_text = allow_upscale_if_needed(training_text, dataset_text, layout, parsed, notes)
    training_doc = TomlDocument(training_path, training_text, tomllib.loads(training_text))
    dataset_doc = TomlDocument(dataset_path, dataset_text, tomllib.loads(dataset_text))
    flat, _ = flatten_training_config(training_doc.data)
    findings = lint_rendered(training_doc, dataset_doc, prompts_path if samples else None, tables)
    plan_summary = summarize_plan(model, gpu, layout, plan, flat, dataset_doc.data, prompt_word)
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
        plan=plan_summary,
        findings=tuple(findings),
    )


# --- writing ------------------------------------------------------------------------


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
        try:
            write_text_atomic(path, text)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the config: {exc.strerror or exc}",
                path=path,
                hint="choose a writable folder with -o",
            ) from exc
    return [p for p, _ in files]
