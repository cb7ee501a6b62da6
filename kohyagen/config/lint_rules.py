"""Rules shared by training and dataset lint: TOML types, resolution, kohya's assertions.

The cross-key checks mirror assertions kohya makes at start-up (kohya-interface.md
section i); finding them here saves renting a GPU to learn about them.
"""

from __future__ import annotations

from typing import Any

from kohyagen.config.family import SDXL, FamilyGuess
from kohyagen.config.keys import suggest
from kohyagen.config.lint_runtime import bucket_step_finding
from kohyagen.config.lint_runtime import finding as runtime_finding
from kohyagen.config.schema import TomlDocument, TomlValidator
from kohyagen.findings import Finding, Severity

# Training options whose value a dataset_config.toml replaces when it sets them too
# (kohya's fallback order: subset > dataset > general > training options).
RENAMED_IN_DATASET = {"train_batch_size": "batch_size", "dataset_repeats": "num_repeats"}
# Names kohya's get_optimizer matches case-insensitively.
KNOWN_OPTIMIZERS = (
    "adamw", "adamw8bit", "pagedadamw", "pagedadamw8bit", "pagedadamw32bit", "lion",
    "lion8bit", "pagedlion8bit", "sgdnesterov", "sgdnesterov8bit", "dadaptation",
    "dadaptadampreprint", "dadaptadam", "dadaptadagrad", "dadaptadan", "dadaptadanip",
    "dadaptlion", "dadaptsgd", "prodigy", "adafactor", "adamwschedulefree",
    "sgdschedulefree", "radamschedulefree",
)  # fmt: skip
# Anything else without a dot is looked up in torch.optim by its exact (case-sensitive) name.
TORCH_OPTIMIZERS = (
    "Adadelta", "Adafactor", "Adagrad", "Adam", "Adamax", "AdamW", "ASGD", "LBFGS", "NAdam",
    "RAdam", "RMSprop", "Rprop", "SGD", "SparseAdam",
)  # fmt: skip


finding = runtime_finding


def type_finding(file: str, key: str, value: Any, prop: dict, label: str) -> Finding | None:
    """A value kohya would receive with the wrong TOML type or outside its choices."""
    errors = list(TomlValidator(prop).iter_errors(value))
    if not errors:
        return None
    shown = repr(value) if not isinstance(value, bool) else str(value).lower()
    types = _expected_types(prop)
    if "enum" in prop or any("enum" in p for p in prop.get("anyOf", [])):
        choices = prop.get("enum") or next(p["enum"] for p in prop["anyOf"] if "enum" in p)
        if isinstance(value, str):
            close = suggest(value, choices)
            return finding(
                Severity.ERROR,
                "bad-choice",
                f"{shown} is not one of kohya's choices for {key}",
                file,
                label,
                (f'{key} = "{close}"' if close else f"use one of: {', '.join(choices)}"),
            )
    fix = None
    if "string" in types and isinstance(value, (int, float)) and not isinstance(value, bool):
        fix = f'{key} = "{value}"'
        message = f"{key} is the number {value}; kohya needs a string here"
        if key == "resolution":
            message += " (it crashes on int.split)"
    elif "boolean" in types and isinstance(value, str):
        fix = f"{key} = {value.strip().lower() in ('1', 'true', 'yes', 'on')!s}".lower()
        message = f"{key} is the string {shown}; kohya needs a TOML boolean"
    elif ("number" in types or "integer" in types) and isinstance(value, str):
        fix = f"{key} = {value}"
        message = f"{key} is the string {shown}; kohya needs a number (no quotes)"
    elif "integer" in types and isinstance(value, float) and value.is_integer():
        fix = f"{key} = {int(value)}"
        message = f"{key} is the float {value}; kohya needs an integer"
    else:
        message = f"{key} = {shown}: {errors[0].message}"
    return finding(Severity.ERROR, "wrong-type", message, file, label, fix)


def _expected_types(prop: dict) -> set[str]:
    out = set()
    for p in [prop, *prop.get("anyOf", [])]:
        t = p.get("type")
        if isinstance(t, str):
            out.add(t)
    return out


def parse_resolution(value: Any) -> tuple[int, int] | None:
    """kohya's resolution as (width, height) from either file's spelling, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value, value
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0], value[1]
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if len(parts) in (1, 2) and all(p.isdigit() for p in parts):
            nums = [int(p) for p in parts]
            return (nums[0], nums[-1]) if len(nums) == 2 else (nums[0], nums[0])
    return None


def dataset_contexts(flat: dict, dataset: TomlDocument | None) -> list[tuple[dict, dict]]:
    """Effective dataset-level values per [[datasets]] entry (with the training fallback).

    Each entry is (values, labels): labels says where each value was written
    ("datasets[0].resolution", "general.resolution" or the training key).
    """
    base = {RENAMED_IN_DATASET.get(k, k): v for k, v in flat.items()}
    base_labels = {RENAMED_IN_DATASET.get(k, k): k for k in flat}
    if dataset is None:
        return [(base, base_labels)]
    general = dataset.data.get("general", {})
    general = general if isinstance(general, dict) else {}
    values = {**base, **general}
    labels = {**base_labels, **{k: f"general.{k}" for k in general}}
    datasets = dataset.data.get("datasets", [])
    if not isinstance(datasets, list) or not datasets:
        return [(values, labels)]
    out = []
    for i, ds in enumerate(datasets):
        own = {k: v for k, v in ds.items() if k != "subsets"} if isinstance(ds, dict) else {}
        out.append(({**values, **own}, {**labels, **{k: f"datasets[{i}].{k}" for k in own}}))
    return out


def _any_augment(flat: dict, dataset: TomlDocument | None, key: str) -> bool:
    if flat.get(key) is True:
        return True
    if dataset is None:
        return False
    data = dataset.data
    if data.get("general", {}).get(key) is True:
        return True
    for ds in data.get("datasets", []) or []:
        if not isinstance(ds, dict):
            continue
        if ds.get(key) is True:
            return True
        if any(isinstance(s, dict) and s.get(key) is True for s in ds.get("subsets", []) or []):
            return True
    return False


def cross_key_findings(
    file: str, flat: dict, family: FamilyGuess, dataset: TomlDocument | None
) -> list[Finding]:
    """kohya's own start-up assertions between options, checked before a GPU is rented."""
    out: list[Finding] = []
    mp = flat.get("mixed_precision", "no")
    add = out.append
    out += _precision_findings(file, flat, mp)
    # train_network.py:581-589: latents cached once cannot follow a per-step augmentation
    if flat.get("cache_latents"):
        for aug in ("color_aug", "random_crop"):
            if _any_augment(flat, dataset, aug):
                add(finding(Severity.ERROR, "cache-latents-with-augment",
                             f"cache_latents cannot be used with {aug} (kohya asserts): cached "
                             "latents are computed once", file, "cache_latents",
                             f"drop {aug}, or set cache_latents = false"))  # fmt: skip
    # train_util.py:4443-4444 raises ValueError: the adaptive scale is added to noise_offset
    if flat.get("adaptive_noise_scale") is not None and flat.get("noise_offset") is None:
        add(finding(Severity.ERROR, "adaptive-noise-needs-offset",
                     "adaptive_noise_scale requires noise_offset (kohya raises ValueError)",
                     file, "adaptive_noise_scale", "noise_offset = 0.05"))  # fmt: skip
    out += _sdxl_findings(file, flat, family, dataset, mp)
    if flat.get("max_train_steps") is not None and flat.get("max_train_epochs") is not None:
        add(finding(Severity.INFO, "epochs-override-steps",
                     "max_train_epochs overrides max_train_steps", file, "max_train_steps",
                     "drop one of them"))  # fmt: skip
    out += _optimizer_findings(file, flat)
    out += _bucket_range_findings(file, flat, family, dataset)
    return out


def _precision_findings(file: str, flat: dict, mp: str) -> list[Finding]:
    """full_fp16, full_bf16 and fp8_base need a matching mixed_precision.

    kohya asserts each when it prepares the network (train_network.py:815-833), that is
    after the models are loaded: here it is caught before anything is downloaded.
    """
    out: list[Finding] = []
    add = out.append
    if flat.get("full_fp16") and mp != "fp16":
        add(finding(Severity.ERROR, "full-fp16-needs-fp16",
                     "full_fp16 requires mixed_precision = \"fp16\" (kohya asserts)",
                     file, "full_fp16", 'mixed_precision = "fp16", or drop full_fp16'))  # fmt: skip
    if flat.get("full_bf16") and mp != "bf16":
        add(finding(Severity.ERROR, "full-bf16-needs-bf16",
                     "full_bf16 requires mixed_precision = \"bf16\" (kohya asserts)",
                     file, "full_bf16", 'mixed_precision = "bf16", or drop full_bf16'))  # fmt: skip
    if flat.get("fp8_base") and mp not in ("fp16", "bf16"):
        add(finding(Severity.ERROR, "fp8-needs-mixed-precision",
                     "fp8_base requires mixed_precision fp16 or bf16 (kohya asserts)",
                     file, "fp8_base", 'mixed_precision = "bf16"'))  # fmt: skip
    return out


def _sdxl_findings(
    file: str, flat: dict, family: FamilyGuess, dataset: TomlDocument | None, mp: str
) -> list[Finding]:
    """SDXL's text-encoder output cache against text-encoder training and caption changes.

    sdxl_train_network.py:39-41 asserts both: cached outputs are computed once, so neither
    a trained text encoder nor a caption that changes per step can use them.
    """
    out: list[Finding] = []
    add = out.append
    if family.name == SDXL and (
        flat.get("cache_text_encoder_outputs") or flat.get("cache_text_encoder_outputs_to_disk")
    ):
        if not flat.get("network_train_unet_only"):
            add(finding(Severity.ERROR, "te-cache-with-te-training",
                         "cache_text_encoder_outputs while the text encoders are trained "
                         "(kohya asserts)", file, "cache_text_encoder_outputs",
                         "network_train_unet_only = true, or drop the cache"))  # fmt: skip
        for key in ("shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate",
                    "token_warmup_step"):  # fmt: skip
            if _any_augment(flat, dataset, key) or _truthy_number(flat, dataset, key):
                add(finding(Severity.ERROR, "te-cache-with-caption-changes",
                             f"{key} changes captions every step, which cached text encoder "
                             "outputs cannot follow (kohya asserts)", file, key,
                             f"drop {key} or cache_text_encoder_outputs"))  # fmt: skip
    if family.name == SDXL and mp == "fp16" and not flat.get("no_half_vae"):
        add(finding(Severity.WARNING, "sdxl-vae-fp16",
                    "SDXL's VAE overflows in fp16 and can give NaN latents",
                    file, "mixed_precision", "no_half_vae = true, or bf16 where the GPU has it"))  # fmt: skip
    return out


def _optimizer_findings(file: str, flat: dict) -> list[Finding]:
    """An optimizer_type that kohya's get_optimizer (train_util.py) cannot resolve."""
    out: list[Finding] = []
    add = out.append
    opt = flat.get("optimizer_type")
    known = isinstance(opt, str) and (opt.lower() in KNOWN_OPTIMIZERS or opt in TORCH_OPTIMIZERS)
    if isinstance(opt, str) and opt and "." not in opt and not known:
        close = suggest(opt.lower(), KNOWN_OPTIMIZERS)
        # kohya looks any other name up with getattr(torch.optim, name): AttributeError
        add(finding(Severity.ERROR, "unknown-optimizer",
                     f"optimizer_type {opt!r} is not one of kohya's optimizers (kohya fails "
                     "looking it up in torch.optim)",
                     file, "optimizer_type",
                     f'optimizer_type = "{close}"' if close else 'optimizer_type = "AdamW8bit"'))  # fmt: skip
    return out


def _bucket_range_findings(
    file: str, flat: dict, family: FamilyGuess, dataset: TomlDocument | None
) -> list[Finding]:
    """Per dataset: the bucket step, and the bucket range around the resolution."""
    out: list[Finding] = []
    add = out.append
    for ctx, labels in dataset_contexts(flat, dataset):

        def where(key: str, labels: dict[str, str] = labels) -> tuple[str, str]:
            label = labels.get(key, key)
            if dataset is not None and label != key:
                return str(dataset.path), label
            return file, label

        bad_steps = bucket_step_finding(
            ctx.get("bucket_reso_steps", 64), family, *where("bucket_reso_steps")
        )
        if bad_steps is not None:
            add(bad_steps)
        res = parse_resolution(ctx.get("resolution"))
        if res is None or not ctx.get("enable_bucket"):
            continue
        low, high = ctx.get("min_bucket_reso", 256), ctx.get("max_bucket_reso", 1024)
        if isinstance(low, int) and low > min(res):
            add(finding(Severity.ERROR, "min-bucket-above-resolution",
                         f"min_bucket_reso {low} is larger than the resolution {min(res)} "
                         "(kohya asserts)", *where("min_bucket_reso"),
                         f"min_bucket_reso = {max(64, min(res) // 2 // 64 * 64)}"))  # fmt: skip
        if isinstance(high, int) and high < max(res):
            add(finding(Severity.ERROR, "max-bucket-below-resolution",
                         f"max_bucket_reso {high} is smaller than the resolution {max(res)} "
                         "(kohya asserts)", *where("max_bucket_reso"),
                         f"max_bucket_reso = {max(res) * 2}"))  # fmt: skip
    return out


def _truthy_number(flat: dict, dataset: TomlDocument | None, key: str) -> bool:
    values = [flat.get(key)]
    if dataset is not None:
        values.append(dataset.data.get("general", {}).get(key))
        for ds in dataset.data.get("datasets", []) or []:
            if isinstance(ds, dict):
                values.append(ds.get(key))
                values += [s.get(key) for s in ds.get("subsets", []) or [] if isinstance(s, dict)]
    return any(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)
