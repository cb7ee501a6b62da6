"""Lint kohya TOMLs, hand-written ones included: every problem with file, line, key and fix.

kohya pours --config_file keys into its options unchecked (unknown keys are ignored,
TOML types and choices skip argparse), so most mistakes never produce an error there:
a wrong key silently does nothing, a wrong type crashes an hour later. This module
finds them statically, from kohya's own argument tables (the schemas, or the tables
of the sd-scripts checkout that will run) and the facts in kohya-interface.md.

Severity means one thing: error = kohya will crash, or will silently train something
other than the file says; warning = no effect, ignored harmlessly, or suspicious;
info = advice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kohyagen.config.family import FamilyGuess, detect_family
from kohyagen.config.kohya_tables import KohyaTables, properties_for
from kohyagen.config.lint_disk import (
    PATH_KEYS,
    is_windows_path,
    looks_like_hub_id,
    relative_path_finding,
    resolve,
    train_data_dir_findings,
)
from kohyagen.config.lint_family import family_findings as dit_findings
from kohyagen.config.lint_rules import (
    cross_key_findings,
    dataset_contexts,
    finding,
    parse_resolution,
)
from kohyagen.config.lint_runtime import family_findings, range_findings, runtime_findings
from kohyagen.config.lint_training import dataset_overlap_findings, key_findings
from kohyagen.config.locate import texts_of, with_places
from kohyagen.config.schema import (
    SCRIPT_MARKER,
    TomlDocument,
    flatten_training_config,
    is_dataset_config,
    load_toml,
)
from kohyagen.errors import ConfigError
from kohyagen.findings import Finding, Severity, sort_findings

ESSENTIALS = {
    "pretrained_model_name_or_path": ('"<model file, diffusers folder or hub id>"', "the base"),
    "network_module": ('"networks.lora"', "kohya has no default and crashes on None"),
    "output_dir": ('"/abs/path/output"', "kohya crashes at the first save without it"),
}


@dataclass(frozen=True)
class LintOptions:
    """What the user told lint beyond the files: the family, the script, the checkout."""

    model: str | None = None  # a family name as `kohyagen config --model` takes it
    script: str | None = None  # e.g. "sdxl_train_network.py"
    tables: KohyaTables | None = None  # option tables of the sd-scripts checkout found


def family_of(doc: TomlDocument, flat: dict, cwd: Path, options: LintOptions) -> FamilyGuess:
    script = options.script
    marker = SCRIPT_MARKER.search(doc.text)
    if script is None and marker:
        script = marker.group(1)
    model_dir = doc.path.parent if cwd is None else cwd
    return detect_family(flat, model=options.model, script=script, base_dir=model_dir)


def _data_findings(
    file: str, flat: dict, dataset: TomlDocument | None, cwd: Path
) -> list[Finding]:
    findings: list[Finding] = []
    ds_value = flat.get("dataset_config")
    if dataset is not None:
        findings += dataset_overlap_findings(file, flat, dataset)
    elif "train_data_dir" not in flat and not isinstance(ds_value, str):
        findings.append(finding(Severity.ERROR, "no-training-data",
                                "neither train_data_dir nor dataset_config is set: kohya finds "
                                "no data", file, "train_data_dir",
                                'dataset_config = "/abs/path/dataset_config.toml"'))  # fmt: skip
    contexts = dataset_contexts(flat, dataset)
    missing_res = any(parse_resolution(ctx.get("resolution")) is None for ctx, _ in contexts)
    unreadable = dataset is None and isinstance(ds_value, str)  # its resolution is unknown
    if missing_res and "resolution" not in flat and not unreadable:
        findings.append(finding(Severity.ERROR, "missing-resolution",
                                "resolution is not set here or in the dataset config "
                                "(kohya asserts 'resolution is required')", file,
                                "resolution", 'resolution = "512"'))  # fmt: skip
    return findings


def _path_findings(file: str, flat: dict, dataset: TomlDocument | None, cwd: Path) -> list[Finding]:
    findings: list[Finding] = []
    for key in PATH_KEYS:
        value = flat.get(key)
        if isinstance(value, str) and value:
            rel = relative_path_finding(file, key, value, cwd)
            if rel is not None:
                findings.append(rel)
    checkable = {k: v for k, v in flat.items() if isinstance(v, str) and v and not is_windows_path(v)}
    model = checkable.get("pretrained_model_name_or_path")
    if model and not looks_like_hub_id(model) and not resolve(model, cwd).exists():
        findings.append(finding(Severity.ERROR, "model-not-found",
                                f"base model {model!r} not found (resolved from {cwd}); "
                                "kohya stops with 'model is not found'", file,
                                "pretrained_model_name_or_path",
                                "give the absolute path of the .safetensors/.ckpt file or "
                                "diffusers folder, or a Hugging Face id"))  # fmt: skip
    prompts = checkable.get("sample_prompts")
    if prompts and not resolve(prompts, cwd).is_file():
        findings.append(finding(Severity.WARNING, "file-not-found",
                                f"sample prompts file {prompts!r} not found", file,
                                "sample_prompts", "write it, or remove sample_prompts"))  # fmt: skip
    in_json = checkable.get("in_json")
    if dataset is None and in_json and not resolve(in_json, cwd).is_file():
        findings.append(finding(Severity.ERROR, "file-not-found",
                                f"in_json {in_json!r} is not a file (resolved from {cwd}): "
                                "kohya fails loading the fine-tuning metadata", file, "in_json",
                                "fix the path, or remove in_json"))  # fmt: skip
    reg = checkable.get("reg_data_dir")
    if dataset is None and reg and not resolve(reg, cwd).is_dir():
        findings.append(finding(Severity.ERROR, "data-dir-not-found",
                                f"reg_data_dir {reg!r} is not a folder (resolved from {cwd})",
                                file, "reg_data_dir", "fix the path, or remove reg_data_dir"))  # fmt: skip
    if dataset is None and "train_data_dir" in checkable and "in_json" not in flat:
        ext = flat.get("caption_extention") or flat.get("caption_extension")
        findings += train_data_dir_findings(
            file, "train_data_dir", checkable["train_data_dir"], cwd, ext, flat
        )
    return findings


def _save_findings(file: str, flat: dict) -> list[Finding]:
    every, epochs = flat.get("save_every_n_epochs"), flat.get("max_train_epochs")
    if isinstance(every, int) and isinstance(epochs, int) and every >= epochs > 0:
        return [finding(Severity.INFO, "no-intermediate-saves",
                        f"save_every_n_epochs {every} >= max_train_epochs {epochs}: kohya never "
                        "saves the last epoch under a number, so only the final model is "
                        "written", file, "save_every_n_epochs",
                        f"save_every_n_epochs = {max(1, epochs // 5)}")]  # fmt: skip
    if "save_every_n_epochs" not in flat and "save_every_n_steps" not in flat:
        return [finding(Severity.INFO, "no-intermediate-saves",
                        "only the final model is saved: no checkpoints to choose from",
                        file, "save_every_n_epochs", "save_every_n_epochs = 1")]  # fmt: skip
    return []


def lint_training_config(
    doc: TomlDocument,
    *,
    dataset: TomlDocument | None = None,
    cwd: str | Path | None = None,
    options: LintOptions | None = None,
) -> list[Finding]:
    """Every problem of a --config_file TOML (and what its dataset_config changes)."""
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    options = options or LintOptions()
    file = str(doc.path)
    flat, origin = flatten_training_config(doc.data)
    family = family_of(doc, flat, cwd, options)
    props = properties_for(family, options.tables)
    findings = key_findings(file, flat, origin, props, doc.data)
    for key, (example, why) in ESSENTIALS.items():
        if key not in flat:
            findings.append(finding(Severity.ERROR, f"missing-{key.replace('_', '-')}",
                                    f"{key} is missing ({why})", file, key,
                                    f"{key} = {example}"))  # fmt: skip
    ds_value = flat.get("dataset_config")
    if dataset is None and isinstance(ds_value, str) and not is_windows_path(ds_value):
        try:
            dataset = load_toml(resolve(ds_value, cwd))
        except ConfigError as exc:
            findings.append(finding(Severity.ERROR, "dataset-config-unreadable",
                                    f"dataset_config {ds_value!r}: {exc.message}", file,
                                    "dataset_config", "fix the path (absolute is safest)"))  # fmt: skip
    findings += _data_findings(file, flat, dataset, cwd)
    findings += _path_findings(file, flat, dataset, cwd)
    findings += cross_key_findings(file, flat, family, dataset)
    findings += range_findings(file, flat, family)
    findings += runtime_findings(file, flat)
    findings += family_findings(file, flat, family)
    if family.name is not None:
        # the DiT scripts' own start-up assertions and their model files
        findings += [
            replace(f, file=f.file or file)
            for f in dit_findings(flat, dataset.data if dataset else None, family.name, cwd)
        ]
    findings += _save_findings(file, flat)
    return sort_findings(findings)


def lint_dataset_config(
    doc: TomlDocument,
    *,
    cwd: str | Path | None = None,
    training: TomlDocument | None = None,
    options: LintOptions | None = None,
) -> list[Finding]:
    from kohyagen.config.lint_dataset import lint_dataset

    cwd = Path(cwd) if cwd is not None else Path.cwd()
    family = None
    if training is not None:
        flat, _ = flatten_training_config(training.data)
        family = family_of(training, flat, cwd, options or LintOptions())
    elif options is not None and options.model:
        family = detect_family({}, model=options.model, script=None, base_dir=cwd)
    return lint_dataset(doc, cwd=cwd, training=training, family=family)


def misnamed_datasets(data: dict[str, Any]) -> bool:
    """`[[dataset]]` (an array of tables with subsets): a dataset config under a wrong name.

    A single `[dataset]` table is a section of a training config (kohya flattens it).
    """
    value = data.get("dataset")
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) for v in value)
        and "datasets" not in data
    )


def is_dataset_document(data: dict[str, Any]) -> bool:
    return (
        is_dataset_config(data)
        or misnamed_datasets(data)
        or (bool(data) and set(data) <= {"general", "datasets"})
    )


def _paired_dataset(
    flat: dict, cwd: Path, given: dict[Path, TomlDocument]
) -> TomlDocument | None:
    """The dataset file this training file launches with: its dataset_config, or the one
    dataset file given in the same call (a notebook's `--dataset_config` beside it)."""
    ds_value = flat.get("dataset_config")
    if isinstance(ds_value, str) and not is_windows_path(ds_value):
        ds_path = resolve(ds_value, cwd).resolve()
        if ds_path in given:
            return given[ds_path]
        if ds_path.is_file():
            try:
                return load_toml(ds_path)
            except ConfigError:
                return None  # reported by lint_training_config
        return None
    if len(given) == 1 and not isinstance(ds_value, str):
        return next(iter(given.values()))
    return None


def lint_files(
    paths: Iterable[str | Path], *, cwd: str | Path | None = None, options: LintOptions | None = None
) -> list[Finding]:
    """Lint each file (training or dataset config, told apart by shape).

    Files given together are one launch: a training file is linted with its dataset
    file (its dataset_config, or the one dataset file given beside it), and the dataset
    file with the training options as its fallbacks, as kohya reads them together.
    """
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    options = options or LintOptions()
    docs = [load_toml(p if Path(p).is_absolute() else cwd / p) for p in paths]
    findings: list[Finding] = []
    done: set[Path] = set()
    trainings = [d for d in docs if not is_dataset_document(d.data)]
    datasets = {d.path.resolve(): d for d in docs if is_dataset_document(d.data)}
    for doc in trainings:
        flat, _ = flatten_training_config(doc.data)
        dataset = _paired_dataset(flat, cwd, datasets)
        findings += lint_training_config(doc, dataset=dataset, cwd=cwd, options=options)
        if dataset is not None and dataset.path.resolve() not in done:
            done.add(dataset.path.resolve())
            findings += lint_dataset_config(dataset, cwd=cwd, training=doc, options=options)
    for path, doc in datasets.items():
        if path not in done:
            done.add(path)
            findings += lint_dataset_config(doc, cwd=cwd, options=options)
    placed = with_places(findings, texts_of([d.path for d in docs] + _extra_paths(findings, docs)))
    return sort_findings(placed)


def _extra_paths(findings: list[Finding], docs: list[TomlDocument]) -> list[Path]:
    """Dataset files reached through dataset_config but not named on the command line."""
    named = {str(d.path) for d in docs}
    return [Path(f.file) for f in findings if f.file and f.file not in named and f.file.endswith(".toml")]
