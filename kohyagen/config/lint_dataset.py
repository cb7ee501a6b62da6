"""Lint a kohya --dataset_config TOML: structure, types, and what its folders hold.

kohya validates this file strictly (voluptuous rejects unknown keys and wrong
types), but only after loading the models, and with messages like
`extra keys not allowed @ data['general']['train_batch_size']`. Here every problem
is listed at once with its fix, plus the silent ones kohya does not check: repeats
and class tokens that are no longer read from folder names, captions it will not
read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kohyagen.config.family import FamilyGuess
from kohyagen.config.keys import dataset_level_keys
from kohyagen.config.lint_buckets import bucket_crash_findings, bucket_settings_of
from kohyagen.config.lint_captions import caption_findings
from kohyagen.config.lint_dataset_keys import dataset_finding as _f
from kohyagen.config.lint_dataset_keys import first_set as _first
from kohyagen.config.lint_dataset_keys import level_key_findings as _check_keys
from kohyagen.config.lint_disk import (
    broken_link_findings,
    empty_image_findings,
    image_dir_images,
    is_windows_path,
    relative_path_finding,
    resolve,
)
from kohyagen.config.lint_rules import RENAMED_IN_DATASET, cross_key_findings, parse_resolution
from kohyagen.config.schema import TomlDocument, flatten_training_config
from kohyagen.dataset.layout import parse_folder_name
from kohyagen.findings import Finding, Severity, sort_findings


def lint_dataset(
    doc: TomlDocument, *, cwd: Path, training: TomlDocument | None, family: FamilyGuess | None
) -> list[Finding]:
    file = str(doc.path)
    data = doc.data
    flat: dict[str, Any] = {}
    family = family or FamilyGuess(None, "")
    if training is not None:
        flat, _ = flatten_training_config(training.data)
    findings: list[Finding] = []
    name, top = _top_level_findings(file, data)
    findings += top
    general = data.get("general", {})
    if not isinstance(general, dict):
        findings.append(_f(Severity.ERROR, "wrong-type", "general must be a table", file,
                           "general", "[general]"))  # fmt: skip
        general = {}
    findings += _check_keys(file, general, "general", "general")
    datasets = data.get(name, [])
    if not isinstance(datasets, list) or not datasets:
        findings.append(_f(Severity.ERROR, "no-datasets",
                           "no [[datasets]] entries: kohya finds no data and exits 0", file,
                           "datasets", "add [[datasets]] with [[datasets.subsets]] image_dir = ..."))  # fmt: skip
        datasets = []
    for i, ds in enumerate(datasets):
        if isinstance(ds, dict):
            findings += _dataset(file, f"{name}[{i}]", ds, (general, flat), cwd)
    findings += _resolution_findings(file, datasets, general, flat, training)
    if training is None:
        shaped = doc if name == "datasets" else TomlDocument(doc.path, doc.text, {
            **{k: v for k, v in data.items() if k != name}, "datasets": datasets})  # fmt: skip
        findings += [
            f
            for f in cross_key_findings(file, {}, family, shaped)
            if f.code.startswith(("bucket", "min-bucket", "max-bucket"))
        ]
    return sort_findings(findings)


def _top_level_findings(file: str, data: dict) -> tuple[str, list[Finding]]:
    """The name the datasets table goes by here, and the top-level keys kohya rejects."""
    findings: list[Finding] = []
    name = "datasets"
    if "datasets" not in data and isinstance(data.get("dataset"), list):
        # 2023-era guides wrote [[dataset]]; kohya's voluptuous schema rejects the key
        name = "dataset"
        findings.append(_f(Severity.ERROR, "misnamed-datasets",
                           "kohya rejects 'dataset'; the table is [[datasets]] (and its subsets "
                           "[[datasets.subsets]])", file, "dataset",
                           "rename [[dataset]] to [[datasets]] and [[dataset.subsets]] to "
                           "[[datasets.subsets]]"))  # fmt: skip
    for key in data:
        if key not in ("general", name):
            if key in dataset_level_keys()["general"]:
                fix = f"move {key} into [general]"
            else:
                fix = "a dataset config holds only [general] and [[datasets]]"
            findings.append(_f(Severity.ERROR, "unknown-key",
                               f"top-level key {key!r}: kohya rejects the file", file, key, fix))  # fmt: skip
    return name, findings


def _dataset(file: str, label: str, ds: dict, parents: tuple, cwd: Path) -> list[Finding]:
    """One [[datasets]] table: its keys, its subsets, and its validation split."""
    general, flat = parents
    findings: list[Finding] = []
    findings += _check_keys(file, ds, "datasets", label)
    subsets = ds.get("subsets", [])
    if not isinstance(subsets, list) or not subsets:
        findings.append(_f(Severity.ERROR, "no-subsets",
                           f"{label} has no [[datasets.subsets]]: it contributes no images",
                           file, f"{label}.subsets", "add a subset with image_dir"))  # fmt: skip
        return findings
    styles = {
        "metadata" if "metadata_file" in s else "folder" for s in subsets if isinstance(s, dict)
    }
    if len(styles) > 1:
        findings.append(_f(Severity.ERROR, "mixed-styles",
                           f"{label} mixes metadata_file and image_dir-only subsets "
                           "(kohya rejects that)", file, label,
                           "put them in separate [[datasets]]"))  # fmt: skip
    for j, subset in enumerate(subsets):
        if isinstance(subset, dict):
            findings += _subset(file, f"{label}.subsets[{j}]", subset, (ds, general, flat), cwd)
    split = _first(ds.get("validation_split"), general.get("validation_split"),
                   flat.get("validation_split"))  # fmt: skip
    seed = _first(ds.get("validation_seed"), general.get("validation_seed"),
                  flat.get("validation_seed"))  # fmt: skip
    if isinstance(split, (int, float)) and not 0 <= split <= 1:
        findings.append(_f(Severity.ERROR, "bad-validation-split",
                           f"validation_split {split} is outside 0..1; kohya skips it",
                           file, f"{label}.validation_split", "validation_split = 0.1"))  # fmt: skip
    elif isinstance(split, (int, float)) and split > 0 and seed is None:
        findings.append(_f(Severity.WARNING, "validation-without-seed",
                           "validation_split without validation_seed: training and "
                           "validation images can overlap", file,
                           f"{label}.validation_seed", "validation_seed = 42"))  # fmt: skip
    return findings


def _resolution_findings(
    file: str, datasets: list, general: dict, flat: dict, training: TomlDocument | None
) -> list[Finding]:
    """kohya asserts a resolution per dataset, from its table, [general] or the command line."""
    findings: list[Finding] = []
    has_res = [
        parse_resolution(_first(ds.get("resolution"), general.get("resolution"))) is not None
        for ds in datasets
        if isinstance(ds, dict)
    ] or [parse_resolution(general.get("resolution")) is not None]
    if not all(has_res) and (training is None or "resolution" not in flat):
        sev = Severity.ERROR if training is not None else Severity.WARNING
        findings.append(_f(sev, "missing-resolution",
                           "no resolution for every dataset here"
                           + ("" if training is None else " or in the training config")
                           + " (kohya asserts 'resolution is required')", file,
                           "general.resolution", "resolution = 512   # in [general]"))  # fmt: skip
    return findings


def _other_paths(file: str, label: str, subset: dict, cwd: Path) -> list[Finding]:
    """metadata_file (fine-tuning) and conditioning_data_dir (ControlNet): exist or not."""
    out: list[Finding] = []
    for key, want_dir in (("metadata_file", False), ("conditioning_data_dir", True)):
        value = subset.get(key)
        if not isinstance(value, str) or not value:
            continue
        rel = relative_path_finding(file, f"{label}.{key}", value, cwd)
        if rel is not None:
            out.append(rel)
        if is_windows_path(value):
            continue
        path = resolve(value, cwd)
        if not (path.is_dir() if want_dir else path.is_file()):
            kind = "folder" if want_dir else "file"
            out.append(_f(Severity.ERROR, "path-not-found",
                          f"{key} {value!r} is not a {kind} (resolved to {path}): kohya fails "
                          "loading this subset", file, f"{label}.{key}",
                          f"give the absolute path of the {kind}"))  # fmt: skip
    return out


def _subset(file: str, label: str, subset: dict, parents: tuple, cwd: Path) -> list[Finding]:
    """One [[datasets.subsets]] table: its keys, its paths, and the image folder it names."""
    out: list[Finding] = []
    out += _check_keys(file, subset, "subsets", label)
    if "image_dir" not in subset and "metadata_file" not in subset:
        out.append(_f(Severity.ERROR, "missing-image-dir",
                      f"{label} has no image_dir (kohya: required key not provided)", file,
                      f"{label}.image_dir", 'image_dir = "/abs/path/10_name"'))  # fmt: skip
        return out
    out += _other_paths(file, label, subset, cwd)
    image_dir = subset.get("image_dir")
    if not isinstance(image_dir, str):
        return out
    rel = relative_path_finding(file, f"{label}.image_dir", image_dir, cwd)
    if rel is not None:
        out.append(rel)
    if is_windows_path(image_dir):
        return out
    folder = resolve(image_dir, cwd)
    if not folder.is_dir():
        out.append(_f(Severity.ERROR, "image-dir-not-found",
                      f"image_dir {image_dir!r} is not a folder (resolved to {folder})", file,
                      f"{label}.image_dir", "use the absolute path of the image folder"))  # fmt: skip
        return out
    images = image_dir_images(folder)
    if "metadata_file" in subset:
        return out  # fine-tuning: captions come from the metadata, not the folder
    if not images:
        inner = [
            d.name for d in sorted(folder.iterdir()) if d.is_dir() and parse_folder_name(d.name)
        ]
        fix = (
            f"image_dir is the train dir; make one subset per folder ({', '.join(inner[:3])}), "
            "each with its own num_repeats and class_tokens"
            if inner
            else "point image_dir at the folder with the images"
        )
        out.append(_f(Severity.ERROR, "no-images",
                      f"{folder} has no images kohya reads (.png .jpg .jpeg .webp .bmp); "
                      "image_dir is not scanned for subfolders", file,
                      f"{label}.image_dir", fix))  # fmt: skip
        return out
    return out + _folder_findings(file, label, subset, parents, folder, images)


def _folder_findings(
    file: str, label: str, subset: dict, parents: tuple, folder: Path, images: list[Path]
) -> list[Finding]:
    """An image folder as a dataset config names it: repeats, class tokens, images, captions."""
    ds, general, flat = parents
    out: list[Finding] = []
    parsed = parse_folder_name(folder.name)
    repeats = _first(subset.get("num_repeats"), ds.get("num_repeats"), general.get("num_repeats"),
                     flat.get("dataset_repeats"))  # fmt: skip
    if repeats is None and parsed and parsed[0] != 1:
        out.append(_f(Severity.WARNING, "repeats-not-parsed",
                      f"num_repeats is not set, so it is 1: with a dataset config kohya does not "
                      f"read the {parsed[0]} from the folder name {folder.name!r}", file,
                      f"{label}.num_repeats", f"num_repeats = {parsed[0]}"))  # fmt: skip
    tokens = _first(subset.get("class_tokens"), ds.get("class_tokens"), general.get("class_tokens"))
    ext = _first(subset.get("caption_extension"), ds.get("caption_extension"),
                 general.get("caption_extension"), flat.get("caption_extention"),
                 flat.get("caption_extension"))  # fmt: skip
    if tokens is None and parsed and parsed[1]:
        uncaptioned = [img for img in images if not os.path.isfile(img.with_suffix(ext or ".caption"))]
        if uncaptioned:
            out.append(_f(Severity.WARNING, "class-tokens-not-parsed",
                          f"{len(uncaptioned)} images have no caption and class_tokens is not "
                          f"set: with a dataset config kohya does not take {parsed[1]!r} from "
                          "the folder name, so they train on an empty caption", file,
                          f"{label}.class_tokens", f'class_tokens = "{parsed[1]}"'))  # fmt: skip
    out += empty_image_findings(file, f"{label}.image_dir", images, where=f"{folder.name}/")
    context = {RENAMED_IN_DATASET.get(k, k): v for k, v in flat.items()}
    context.update({**general, **{k: v for k, v in ds.items() if k != "subsets"}})
    out += bucket_crash_findings(file, f"{label}.image_dir", images, bucket_settings_of(context),
                                 where=f"{folder.name}/")  # fmt: skip
    out += broken_link_findings(file, f"{label}.image_dir", folder, where=f"{folder.name}/")
    out += caption_findings(
        file,
        f"{label}.image_dir",
        images,
        caption_extension=ext if isinstance(ext, str) else None,
        class_tokens=tokens if isinstance(tokens, str) else None,
        where=f"{folder.name}/",
        ext_key=f"{label}.caption_extension"
        if "caption_extension" in subset
        else "general.caption_extension",
    )
    return out
