"""Which keys each level of a kohya dataset config accepts, and why it rejects the others.

kohya's config_util.py builds a voluptuous schema per level ([general], [[datasets]],
[[datasets.subsets]]) and per style (DreamBooth, fine-tuning, ControlNet), so a key that
is right at one level is `extra keys not allowed` at another.
"""

from __future__ import annotations

from typing import Any

from kohyagen.config.keys import (
    DATASET_ALIASES,
    cli_only_dataset_keys,
    dataset_level_keys,
    suggest,
    training_keys,
)
from kohyagen.config.lint_rules import type_finding
from kohyagen.config.schema import DATASET_CONFIG, TRAIN_NETWORK, load_schema
from kohyagen.findings import Finding, Severity

LEVEL_NAMES = {
    "general": "[general]",
    "datasets": "[[datasets]]",
    "subsets": "[[datasets.subsets]]",
}


def _prop(level: str, key: str) -> dict | None:
    defs = load_schema(DATASET_CONFIG)["$defs"]
    if level == "general":
        return defs["general"]["properties"].get(key)
    prefix = "dataset_" if level == "datasets" else "subset_"
    for style in ("dreambooth", "finetuning", "controlnet"):
        prop = defs[f"{prefix}{style}"]["properties"].get(key)
        if prop is not None:
            return prop
    return None


def dataset_finding(sev: Severity, code: str, message: str, file: str, key: str, fix: str | None = None) -> Finding:
    return Finding(sev, code, message, file=file, key=key, fix=fix)


def level_key_findings(file: str, table: dict, level: str, label: str) -> list[Finding]:
    """Each key of one table: allowed at this level and of the right type, or why kohya rejects it."""
    levels = dataset_level_keys()
    allowed = levels[level]
    out = []
    for key, value in table.items():
        if level == "datasets" and key == "subsets":
            continue
        path = f"{label}.{key}" if label else key
        if key in allowed:
            prop = _prop(level, key)
            bad = type_finding(file, key, value, prop, path) if prop else None
            if bad is not None:
                out.append(bad)
            continue
        where = LEVEL_NAMES[level]
        if key in cli_only_dataset_keys():
            out.append(dataset_finding(Severity.ERROR, "cli-only-key",
                          f"{key} is a command-line-only option: kohya rejects it in the dataset "
                          "config (extra keys not allowed)", file, path,
                          f"move {key} to the training config"))  # fmt: skip
            continue
        other = [name for name, keys in levels.items() if name != level and key in keys]
        if other:
            target = " or ".join(LEVEL_NAMES[o] for o in other)
            out.append(dataset_finding(Severity.ERROR, "wrong-level",
                          f"{key} is not allowed in {where} (kohya rejects it there)", file, path,
                          f"move it to {target}"))  # fmt: skip
            continue
        guess = suggest(key, allowed, DATASET_ALIASES)
        if guess:
            out.append(dataset_finding(Severity.ERROR, "unknown-key",
                          f"unknown key {key!r} in {where}: kohya rejects the file", file, path,
                          f"rename it to {guess}"))  # fmt: skip
        elif key in training_keys(TRAIN_NETWORK):
            out.append(dataset_finding(Severity.ERROR, "training-key-in-dataset-config",
                          f"{key} is a training option (command line / --config_file only); "
                          "kohya rejects it in the dataset config", file, path,
                          f"move {key} to the training config"))  # fmt: skip
        else:
            out.append(dataset_finding(Severity.ERROR, "unknown-key",
                          f"unknown key {key!r} in {where}: kohya rejects the file", file, path,
                          "remove it"))  # fmt: skip
    return out


def first_set(*values: Any) -> Any:
    """The first value that is set: kohya's subset > dataset > general > command-line order."""
    return next((v for v in values if v is not None), None)
