"""Lint kohya TOMLs, hand-written ones included: every problem with file, key and fix.

kohya pours --config_file keys into its options unchecked (unknown keys are ignored,
TOML types skip argparse), so most mistakes never produce an error there: a wrong
key silently does nothing, a wrong type crashes an hour later. This module finds
them statically, from kohya's own argument tables (the schemas) and the facts in
kohya-interface.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kohyagen.errors import ConfigError
from kohyagen.findings import Finding, Severity, sort_findings
from kohyagen.keys import TRAINING_ALIASES, all_dataset_keys, suggest
from kohyagen.lint_disk import (
    PATH_KEYS,
    looks_like_hub_id,
    relative_path_finding,
    resolve,
    train_data_dir_findings,
)
from kohyagen.schema import (
    SDXL_TRAIN_NETWORK,
    TomlDocument,
    TomlValidator,
    flatten_training_config,
    is_dataset_config,
    load_toml,
    script_for_config,
    training_properties,
)

# Training options whose value a dataset_config.toml replaces when it sets them too
# (kohya's fallback order: subset > dataset > general > training options).
RENAMED_IN_DATASET = {"train_batch_size": "batch_size", "dataset_repeats": "num_repeats"}
IGNORED_WITH_DATASET_CONFIG = ("train_data_dir", "reg_data_dir", "in_json")
ESSENTIALS = {
    "pretrained_model_name_or_path": ('"<model file, diffusers folder or hub id>"', "the base"),
    "network_module": ('"networks.lora"', "kohya has no default and crashes on None"),
    "output_dir": ('"/abs/path/output"', "kohya crashes at the first save without it"),
}
KNOWN_OPTIMIZERS = (
    "adamw", "adamw8bit", "pagedadamw", "pagedadamw8bit", "pagedadamw32bit", "lion",
    "lion8bit", "pagedlion8bit", "sgdnesterov", "sgdnesterov8bit", "dadaptation",
    "dadaptadam", "dadaptadagrad", "dadaptadanip", "dadaptlion", "dadaptsgd", "prodigy",
    "adafactor", "adamwschedulefree", "sgdschedulefree", "radamschedulefree",
)  # fmt: skip


def _finding(sev: Severity, code: str, message: str, file: str, key: str | None, fix=None):
    return Finding(sev, code, message, file=file, key=key, fix=fix)


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
            return _finding(
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
    return _finding(Severity.ERROR, "wrong-type", message, file, label, fix)


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


def _dataset_contexts(flat: dict, dataset: TomlDocument | None) -> list[tuple[dict, dict]]:
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
    file: str, flat: dict, script: str, dataset: TomlDocument | None
) -> list[Finding]:
    """kohya's own start-up assertions between options, checked before a GPU is rented."""
    out: list[Finding] = []
    mp = flat.get("mixed_precision", "no")
    add = out.append
    if flat.get("full_fp16") and mp != "fp16":
        add(_finding(Severity.ERROR, "full-fp16-needs-fp16",
                     "full_fp16 requires mixed_precision = \"fp16\" (kohya asserts)",
                     file, "full_fp16", 'mixed_precision = "fp16", or drop full_fp16'))  # fmt: skip
    if flat.get("full_bf16") and mp != "bf16":
        add(_finding(Severity.ERROR, "full-bf16-needs-bf16",
                     "full_bf16 requires mixed_precision = \"bf16\" (kohya asserts)",
                     file, "full_bf16", 'mixed_precision = "bf16", or drop full_bf16'))  # fmt: skip
    if flat.get("fp8_base") and mp not in ("fp16", "bf16"):
        add(_finding(Severity.ERROR, "fp8-needs-mixed-precision",
                     "fp8_base requires mixed_precision fp16 or bf16 (kohya asserts)",
                     file, "fp8_base", 'mixed_precision = "bf16"'))  # fmt: skip
    if flat.get("cache_latents"):
        for aug in ("color_aug", "random_crop"):
            if _any_augment(flat, dataset, aug):
                add(_finding(Severity.ERROR, "cache-latents-with-augment",
                             f"cache_latents cannot be used with {aug} (kohya asserts): cached "
                             "latents are computed once", file, "cache_latents",
                             f"drop {aug}, or set cache_latents = false"))  # fmt: skip
    if flat.get("adaptive_noise_scale") is not None and flat.get("noise_offset") is None:
        add(_finding(Severity.ERROR, "adaptive-noise-needs-offset",
                     "adaptive_noise_scale requires noise_offset (kohya raises ValueError)",
                     file, "adaptive_noise_scale", "noise_offset = 0.05"))  # fmt: skip
    if script == SDXL_TRAIN_NETWORK and (
        flat.get("cache_text_encoder_outputs") or flat.get("cache_text_encoder_outputs_to_disk")
    ):
        if not flat.get("network_train_unet_only"):
            add(_finding(Severity.ERROR, "te-cache-with-te-training",
                         "cache_text_encoder_outputs while the text encoders are trained "
                         "(kohya asserts)", file, "cache_text_encoder_outputs",
                         "network_train_unet_only = true, or drop the cache"))  # fmt: skip
        for key in ("shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate",
                    "token_warmup_step"):  # fmt: skip
            if _any_augment(flat, dataset, key) or _truthy_number(flat, dataset, key):
                add(_finding(Severity.ERROR, "te-cache-with-caption-changes",
                             f"{key} changes captions every step, which cached text encoder "
                             "outputs cannot follow (kohya asserts)", file, key,
                             f"drop {key} or cache_text_encoder_outputs"))  # fmt: skip
    if flat.get("v_parameterization") and not flat.get("v2") and script != SDXL_TRAIN_NETWORK:
        add(_finding(Severity.WARNING, "v-param-without-v2",
                     "v_parameterization without v2: only SD2 768-v models predict v",
                     file, "v_parameterization", "v2 = true for a 768-v model, or drop it"))  # fmt: skip
    if flat.get("max_train_steps") is not None and flat.get("max_train_epochs") is not None:
        add(_finding(Severity.INFO, "epochs-override-steps",
                     "max_train_epochs overrides max_train_steps", file, "max_train_steps",
                     "drop one of them"))  # fmt: skip
    opt = flat.get("optimizer_type")
    if isinstance(opt, str) and opt and "." not in opt and opt.lower() not in KNOWN_OPTIMIZERS:
        close = suggest(opt.lower(), KNOWN_OPTIMIZERS)
        add(_finding(Severity.WARNING, "unknown-optimizer",
                     f"optimizer_type {opt!r} is not one of kohya's optimizers",
                     file, "optimizer_type",
                     f'optimizer_type = "{close}"' if close else 'optimizer_type = "AdamW8bit"'))  # fmt: skip
    step_multiple = 32 if script == SDXL_TRAIN_NETWORK else 64
    for ctx, labels in _dataset_contexts(flat, dataset):

        def where(key: str, labels=labels) -> tuple[str, str]:
            label = labels.get(key, key)
            in_dataset = dataset is not None and label != key
            return (str(dataset.path) if in_dataset else file), label

        steps = ctx.get("bucket_reso_steps", 64)
        if isinstance(steps, int) and steps % step_multiple:
            add(_finding(Severity.ERROR, "bucket-steps",
                         f"bucket_reso_steps {steps} is not divisible by {step_multiple} "
                         "(kohya asserts)", *where("bucket_reso_steps"),
                         f"bucket_reso_steps = {step_multiple if steps < 64 else 64}"))  # fmt: skip
        res = parse_resolution(ctx.get("resolution"))
        if res is None or not ctx.get("enable_bucket"):
            continue
        low, high = ctx.get("min_bucket_reso", 256), ctx.get("max_bucket_reso", 1024)
        if isinstance(low, int) and low > min(res):
            add(_finding(Severity.ERROR, "min-bucket-above-resolution",
                         f"min_bucket_reso {low} is larger than the resolution {min(res)} "
                         "(kohya asserts)", *where("min_bucket_reso"),
                         f"min_bucket_reso = {max(64, min(res) // 2 // 64 * 64)}"))  # fmt: skip
        if isinstance(high, int) and high < max(res):
            add(_finding(Severity.ERROR, "max-bucket-below-resolution",
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


def _key_findings(file: str, flat: dict, origin: dict, script: str) -> list[Finding]:
    props = training_properties(script)
    out: list[Finding] = []
    for key, value in flat.items():
        where = f" (in [{origin[key]}])" if origin.get(key) else ""
        if key not in props:
            guess = suggest(key, props, TRAINING_ALIASES)
            if guess:
                out.append(_finding(
                    Severity.ERROR, "unknown-key",
                    f"unknown option {key!r}{where}: kohya ignores it without a word"
                    + (f", so {guess} keeps its default" if guess in props else ""),
                    file, key, f"rename it to {guess}"))  # fmt: skip
            elif key in all_dataset_keys():
                out.append(_finding(
                    Severity.ERROR, "dataset-key-in-training-config",
                    f"{key!r}{where} is a dataset_config.toml key; kohya ignores it in the "
                    "training config", file, key,
                    "move it to dataset_config.toml ([general] or a subset)"))  # fmt: skip
            else:
                out.append(_finding(
                    Severity.ERROR, "unknown-key",
                    f"unknown option {key!r}{where}: kohya ignores it without a word",
                    file, key, "remove it, or check the spelling against kohya's options"))  # fmt: skip
            continue
        bad = type_finding(file, key, value, props[key], key)
        if bad is not None:
            out.append(bad)
    if "caption_extention" in flat:
        out.append(_finding(Severity.WARNING, "misspelled-alias",
                            "caption_extention is kohya's old misspelling; it still overrides "
                            "caption_extension", file, "caption_extention",
                            "rename it to caption_extension"))  # fmt: skip
    return out


def _dataset_overlap_findings(file: str, flat: dict, dataset: TomlDocument) -> list[Finding]:
    from kohyagen.keys import dataset_level_keys

    out = []
    ds_name = dataset.path.name
    for key in IGNORED_WITH_DATASET_CONFIG:
        if key in flat:
            out.append(_finding(
                Severity.WARNING, "ignored-with-dataset-config",
                f"{key} is ignored because dataset_config is set (kohya logs a warning)",
                file, key, f"remove it; the folders are listed in {ds_name}"))  # fmt: skip
    levels = dataset_level_keys()
    known = levels["general"] | levels["datasets"] | levels["subsets"]
    contexts = [ctx for ctx, _ in _dataset_contexts({}, dataset)]
    subsets = [
        s
        for ds in dataset.data.get("datasets", []) or []
        if isinstance(ds, dict)
        for s in ds.get("subsets", []) or []
        if isinstance(s, dict)
    ]
    for key, value in flat.items():
        ds_key = RENAMED_IN_DATASET.get(key, key)
        if ds_key not in known or key in IGNORED_WITH_DATASET_CONFIG:
            continue
        theirs = [ctx[ds_key] for ctx in contexts if ds_key in ctx]
        theirs += [s[ds_key] for s in subsets if ds_key in s]
        if key == "resolution":
            differing = [v for v in theirs if parse_resolution(v) != parse_resolution(value)]
        else:
            differing = [v for v in theirs if v != value]
        if differing:
            out.append(_finding(
                Severity.WARNING, "overridden-by-dataset-config",
                f"{key} = {value!r} is overridden: {ds_name} sets {ds_key} = {differing[0]!r}, "
                "and kohya uses the dataset file's value", file, key,
                f"set it in one place (change or remove {ds_key} in {ds_name})"))  # fmt: skip
    return out


def lint_training_config(
    doc: TomlDocument, *, dataset: TomlDocument | None = None, cwd: str | Path | None = None
) -> list[Finding]:
    """Every problem of a --config_file TOML (and what its dataset_config changes)."""
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    file = str(doc.path)
    flat, origin = flatten_training_config(doc.data)
    script = script_for_config(doc.text, flat)
    findings = _key_findings(file, flat, origin, script)
    for key, (example, why) in ESSENTIALS.items():
        if key not in flat:
            findings.append(_finding(Severity.ERROR, f"missing-{key.replace('_', '-')}",
                                     f"{key} is missing ({why})", file, key,
                                     f"{key} = {example}"))  # fmt: skip
    ds_value = flat.get("dataset_config")
    if dataset is None and isinstance(ds_value, str):
        ds_path = resolve(ds_value, cwd)
        try:
            dataset = load_toml(ds_path)
        except ConfigError as exc:
            findings.append(_finding(Severity.ERROR, "dataset-config-unreadable",
                                     f"dataset_config {ds_value!r}: {exc.message}", file,
                                     "dataset_config", "fix the path (absolute is safest)"))  # fmt: skip
    if dataset is not None:
        findings += _dataset_overlap_findings(file, flat, dataset)
    elif "train_data_dir" not in flat:
        findings.append(_finding(Severity.ERROR, "no-training-data",
                                 "neither train_data_dir nor dataset_config is set: kohya finds "
                                 "no data", file, "train_data_dir",
                                 'dataset_config = "/abs/path/dataset_config.toml"'))  # fmt: skip
    contexts = _dataset_contexts(flat, dataset)
    missing_res = any(parse_resolution(ctx.get("resolution")) is None for ctx, _ in contexts)
    if missing_res and "resolution" not in flat:
        findings.append(_finding(Severity.ERROR, "missing-resolution",
                                 "resolution is not set here or in the dataset config "
                                 "(kohya asserts 'resolution is required')", file,
                                 "resolution", 'resolution = "512"'))  # fmt: skip
    for key in PATH_KEYS:
        value = flat.get(key)
        if not isinstance(value, str) or not value:
            continue
        rel = relative_path_finding(file, key, value, cwd)
        if rel is not None:
            findings.append(rel)
    model = flat.get("pretrained_model_name_or_path")
    local = isinstance(model, str) and model and not looks_like_hub_id(model)
    if local and not resolve(model, cwd).exists():
        findings.append(_finding(Severity.ERROR, "model-not-found",
                                 f"base model {model!r} not found (resolved from {cwd}); "
                                 "kohya stops with 'model is not found'", file,
                                 "pretrained_model_name_or_path",
                                 "give the absolute path of the .safetensors/.ckpt file or "
                                 "diffusers folder, or a Hugging Face id"))  # fmt: skip
    prompts = flat.get("sample_prompts")
    if isinstance(prompts, str) and prompts and not resolve(prompts, cwd).is_file():
        findings.append(_finding(Severity.WARNING, "file-not-found",
                                 f"sample prompts file {prompts!r} not found", file, prompts,
                                 "write it, or remove sample_prompts"))  # fmt: skip
    reg = flat.get("reg_data_dir")
    if dataset is None and isinstance(reg, str) and reg and not resolve(reg, cwd).is_dir():
        findings.append(_finding(Severity.ERROR, "data-dir-not-found",
                                 f"reg_data_dir {reg!r} is not a folder (resolved from {cwd})",
                                 file, "reg_data_dir", "fix the path, or remove reg_data_dir"))  # fmt: skip
    if dataset is None and isinstance(flat.get("train_data_dir"), str):
        ext = flat.get("caption_extention") or flat.get("caption_extension")
        findings += train_data_dir_findings(
            file, "train_data_dir", flat["train_data_dir"], cwd, ext
        )
    findings += cross_key_findings(file, flat, script, dataset)
    if "save_every_n_epochs" not in flat and "save_every_n_steps" not in flat:
        findings.append(_finding(Severity.INFO, "no-intermediate-saves",
                                 "only the final model is saved: no checkpoints to choose from",
                                 file, "save_every_n_epochs", "save_every_n_epochs = 1"))  # fmt: skip
    return sort_findings(findings)


def lint_dataset_config(
    doc: TomlDocument, *, cwd: str | Path | None = None, training: TomlDocument | None = None
) -> list[Finding]:
    from kohyagen.lint_dataset import lint_dataset

    return lint_dataset(doc, cwd=Path(cwd) if cwd is not None else Path.cwd(), training=training)


def is_dataset_document(data: dict[str, Any]) -> bool:
    return is_dataset_config(data) or (bool(data) and set(data) <= {"general", "datasets"})


def lint_files(paths, *, cwd: str | Path | None = None) -> list[Finding]:
    """Lint each file (training or dataset config, told apart by content).

    A training config's dataset_config is linted too (once), with the training
    options as its fallbacks, as kohya reads them together.
    """
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    docs = [load_toml(p if Path(p).is_absolute() else cwd / p) for p in paths]
    findings: list[Finding] = []
    done: set[Path] = set()
    trainings = [d for d in docs if not is_dataset_document(d.data)]
    datasets = {d.path.resolve(): d for d in docs if is_dataset_document(d.data)}
    for doc in trainings:
        flat, _ = flatten_training_config(doc.data)
        dataset = None
        ds_value = flat.get("dataset_config")
        if isinstance(ds_value, str):
            ds_path = resolve(ds_value, cwd).resolve()
            dataset = datasets.get(ds_path)
            if dataset is None and ds_path.is_file():
                try:
                    dataset = load_toml(ds_path)
                except ConfigError:
                    dataset = None  # reported by lint_training_config
        findings += lint_training_config(doc, dataset=dataset, cwd=cwd)
        if dataset is not None and dataset.path.resolve() not in done:
            done.add(dataset.path.resolve())
            findings += lint_dataset_config(dataset, cwd=cwd, training=doc)
    for path, doc in datasets.items():
        if path not in done:
            done.add(path)
            findings += lint_dataset_config(doc, cwd=cwd)
    return sort_findings(findings)
