"""Lint kohya TOMLs, hand-written ones included: every problem with file, key and fix.

kohya pours --config_file keys into its options unchecked (unknown keys are ignored,
TOML types skip argparse), so most mistakes never produce an error there: a wrong
key silently does nothing, a wrong type crashes an hour later. This module finds
them statically, from kohya's own argument tables (the schemas) and the facts in
kohya-interface.md.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from kohyagen.config.keys import TRAINING_ALIASES, all_dataset_keys, suggest
from kohyagen.config.lint_disk import (
    PATH_KEYS,
    looks_like_hub_id,
    relative_path_finding,
    resolve,
    train_data_dir_findings,
)
from kohyagen.config.lint_family import family_findings
from kohyagen.config.lint_rules import (
    RENAMED_IN_DATASET,
    cross_key_findings,
    dataset_contexts,
    finding,
    parse_resolution,
    type_finding,
)
from kohyagen.config.schema import (
    TomlDocument,
    flatten_training_config,
    is_dataset_config,
    load_toml,
    script_for_config,
    training_properties,
)
from kohyagen.errors import ConfigError
from kohyagen.findings import Finding, Severity, sort_findings

IGNORED_WITH_DATASET_CONFIG = ("train_data_dir", "reg_data_dir", "in_json")
ESSENTIALS = {
    "pretrained_model_name_or_path": ('"<model file, diffusers folder or hub id>"', "the base"),
    "network_module": ('"networks.lora"', "kohya has no default and crashes on None"),
    "output_dir": ('"/abs/path/output"', "kohya crashes at the first save without it"),
}


def flat_sources(data: dict) -> list[tuple[str, dict]]:
    """(section label, its scalar options) in file order, as kohya flattens them."""
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    out = [("the top level", top)] if top else []
    out += [(f"[{k}]", v) for k, v in data.items() if isinstance(v, dict)]
    return out


def _key_findings(
    file: str, flat: dict, origin: dict, script: str, doc_data: dict
) -> list[Finding]:
    props = training_properties(script)
    out: list[Finding] = []
    for key, value in flat.items():
        where = f" (in [{origin[key]}])" if origin.get(key) else ""
        if key not in props:
            guess = suggest(key, props, TRAINING_ALIASES)
            if guess:
                out.append(finding(
                    Severity.ERROR, "unknown-key",
                    f"unknown option {key!r}{where}: kohya ignores it without a word"
                    + (f", so {guess} keeps its default" if guess in props else ""),
                    file, key, f"rename it to {guess}"))  # fmt: skip
            elif key in all_dataset_keys():
                out.append(finding(
                    Severity.ERROR, "dataset-key-in-training-config",
                    f"{key!r}{where} is a dataset_config.toml key; kohya ignores it in the "
                    "training config", file, key,
                    "move it to dataset_config.toml ([general] or a subset)"))  # fmt: skip
            else:
                out.append(finding(
                    Severity.ERROR, "unknown-key",
                    f"unknown option {key!r}{where}: kohya ignores it without a word",
                    file, key, "remove it, or check the spelling against kohya's options"))  # fmt: skip
            continue
        bad = type_finding(file, key, value, props[key], key)
        if bad is not None:
            out.append(bad)
    sections: dict[str, list[str]] = {}
    for table, content in flat_sources(doc_data):
        for key in content:
            sections.setdefault(key, []).append(table)
    for key, tables in sections.items():
        if len(tables) > 1:
            out.append(finding(Severity.WARNING, "duplicate-key",
                               f"{key} is set in {', '.join(tables)}; kohya flattens the "
                               f"sections and keeps the last one ({tables[-1]})", file, key,
                               "keep one of them"))  # fmt: skip
    res = flat.get("resolution")
    if isinstance(res, str) and parse_resolution(res) is None:
        out.append(finding(Severity.ERROR, "bad-resolution",
                           f"resolution {res!r} is not \"W\" or \"W,H\" (kohya crashes parsing it)",
                           file, "resolution", 'resolution = "512" or "512,768"'))  # fmt: skip
    dim, alpha = flat.get("network_dim"), flat.get("network_alpha")
    if isinstance(dim, int) and isinstance(alpha, (int, float)) and alpha > dim:
        out.append(finding(Severity.INFO, "alpha-above-dim",
                           f"network_alpha {alpha} > network_dim {dim} scales LoRA updates up "
                           f"by {alpha / dim:g}; alpha <= dim is usual", file, "network_alpha",
                           f"network_alpha = {dim / 2:g}"))  # fmt: skip
    if "max_train_epochs" not in flat and "max_train_steps" not in flat:
        out.append(finding(Severity.INFO, "default-steps",
                           "neither max_train_epochs nor max_train_steps: kohya trains 1600 "
                           "steps whatever the dataset size", file, "max_train_epochs",
                           "max_train_epochs = 10"))  # fmt: skip
    if "caption_extention" in flat:
        out.append(finding(Severity.WARNING, "misspelled-alias",
                            "caption_extention is kohya's old misspelling; it still overrides "
                            "caption_extension", file, "caption_extention",
                            "rename it to caption_extension"))  # fmt: skip
    return out


def _dataset_overlap_findings(file: str, flat: dict, dataset: TomlDocument) -> list[Finding]:
    from kohyagen.config.keys import dataset_level_keys

    out = []
    ds_name = dataset.path.name
    for key in IGNORED_WITH_DATASET_CONFIG:
        if key in flat:
            out.append(finding(
                Severity.WARNING, "ignored-with-dataset-config",
                f"{key} is ignored because dataset_config is set (kohya logs a warning)",
                file, key, f"remove it; the folders are listed in {ds_name}"))  # fmt: skip
    levels = dataset_level_keys()
    known = levels["general"] | levels["datasets"] | levels["subsets"]
    contexts = [ctx for ctx, _ in dataset_contexts({}, dataset)]
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
            out.append(finding(
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
    findings = _key_findings(file, flat, origin, script, doc.data)
    for key, (example, why) in ESSENTIALS.items():
        if key not in flat:
            findings.append(finding(Severity.ERROR, f"missing-{key.replace('_', '-')}",
                                     f"{key} is missing ({why})", file, key,
                                     f"{key} = {example}"))  # fmt: skip
    ds_value = flat.get("dataset_config")
    if dataset is None and isinstance(ds_value, str):
        ds_path = resolve(ds_value, cwd)
        try:
            dataset = load_toml(ds_path)
        except ConfigError as exc:
            findings.append(finding(Severity.ERROR, "dataset-config-unreadable",
                                     f"dataset_config {ds_value!r}: {exc.message}", file,
                                     "dataset_config", "fix the path (absolute is safest)"))  # fmt: skip
    if dataset is not None:
        findings += _dataset_overlap_findings(file, flat, dataset)
    elif "train_data_dir" not in flat and not isinstance(ds_value, str):
        findings.append(finding(Severity.ERROR, "no-training-data",
                                 "neither train_data_dir nor dataset_config is set: kohya finds "
                                 "no data", file, "train_data_dir",
                                 'dataset_config = "/abs/path/dataset_config.toml"'))  # fmt: skip
    contexts = dataset_contexts(flat, dataset)
    missing_res = any(parse_resolution(ctx.get("resolution")) is None for ctx, _ in contexts)
    if missing_res and "resolution" not in flat:
        findings.append(finding(Severity.ERROR, "missing-resolution",
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
        findings.append(finding(Severity.ERROR, "model-not-found",
                                 f"base model {model!r} not found (resolved from {cwd}); "
                                 "kohya stops with 'model is not found'", file,
                                 "pretrained_model_name_or_path",
                                 "give the absolute path of the .safetensors/.ckpt file or "
                                 "diffusers folder, or a Hugging Face id"))  # fmt: skip
    prompts = flat.get("sample_prompts")
    if isinstance(prompts, str) and prompts and not resolve(prompts, cwd).is_file():
        findings.append(finding(Severity.WARNING, "file-not-found",
                                 f"sample prompts file {prompts!r} not found", file, prompts,
                                 "write it, or remove sample_prompts"))  # fmt: skip
    reg = flat.get("reg_data_dir")
    if dataset is None and isinstance(reg, str) and reg and not resolve(reg, cwd).is_dir():
        findings.append(finding(Severity.ERROR, "data-dir-not-found",
                                 f"reg_data_dir {reg!r} is not a folder (resolved from {cwd})",
                                 file, "reg_data_dir", "fix the path, or remove reg_data_dir"))  # fmt: skip
    if dataset is None and isinstance(flat.get("train_data_dir"), str):
        ext = flat.get("caption_extention") or flat.get("caption_extension")
        findings += train_data_dir_findings(
            file, "train_data_dir", flat["train_data_dir"], cwd, ext
        )
    findings += cross_key_findings(file, flat, script, dataset)
    findings += [
        replace(f, file=f.file or file)
        for f in family_findings(flat, dataset.data if dataset else None, script, cwd)
    ]
    every, epochs = flat.get("save_every_n_epochs"), flat.get("max_train_epochs")
    if isinstance(every, int) and isinstance(epochs, int) and every >= epochs:
        findings.append(finding(Severity.INFO, "no-intermediate-saves",
                                 f"save_every_n_epochs {every} >= max_train_epochs {epochs}: "
                                 "kohya never saves the last epoch under a number, so only the "
                                 "final model is written", file, "save_every_n_epochs",
                                 f"save_every_n_epochs = {max(1, epochs // 5)}"))  # fmt: skip
    elif "save_every_n_epochs" not in flat and "save_every_n_steps" not in flat:
        findings.append(finding(Severity.INFO, "no-intermediate-saves",
                                 "only the final model is saved: no checkpoints to choose from",
                                 file, "save_every_n_epochs", "save_every_n_epochs = 1"))  # fmt: skip
    return sort_findings(findings)


def lint_dataset_config(
    doc: TomlDocument, *, cwd: str | Path | None = None, training: TomlDocument | None = None
) -> list[Finding]:
    from kohyagen.config.lint_dataset import lint_dataset

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
