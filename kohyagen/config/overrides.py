"""`--set key=value` overrides: parsed as TOML, typed by kohya's schema, applied with tomlkit.

A value is read as a TOML value (`4`, `1e-4`, `true`, `"text"`, `[1, 2]`); anything
that is not valid TOML is taken as a bare string (`optimizer_type=AdamW`). The schema
then decides: a number where kohya wants a string becomes that string
(`resolution=768` -> "768"), an integer where a float is required becomes a float
(`validation_split=1` -> 1.0), and anything else that does not validate is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tomlkit
from tomlkit.items import Table

from kohyagen.config.keys import (
    DATASET_ALIASES,
    TRAINING_ALIASES,
    dataset_level_keys,
    suggest,
    training_keys,
)
from kohyagen.config.ranges import check_option_value
from kohyagen.config.schema import DATASET_CONFIG, TomlValidator, load_schema, training_properties
from kohyagen.errors import ConfigError, UsageError
from kohyagen.toml_compat import tomllib
from kohyagen.validate import caption_extension_problem, name_problem

TRAINING = "training"
DATASET = "dataset"


@dataclass(frozen=True)
class Override:
    target: str  # "training" | "dataset" (the [general] table)
    key: str
    value: Any
    text: str  # as the user wrote it, for messages
    comment: str | None = None  # why, where kohyagen set it as a consequence of --set


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        # not a TOML value (RecursionError: nested past tomllib's recursion): the schema
        # then judges the text as a string
        return raw


def _typed(key: str, raw: str, value: Any, prop: dict, where: str) -> Any:
    candidates = [value]
    if isinstance(value, int) and not isinstance(value, bool):
        candidates.append(float(value))
    if not isinstance(value, str):
        candidates.append(raw)
    validator = TomlValidator(prop)
    for candidate in candidates:
        if not list(validator.iter_errors(candidate)):
            return candidate
    error = next(iter(validator.iter_errors(value)))
    hint = f"valid values: {', '.join(map(str, prop['enum']))}" if "enum" in prop else None
    raise ConfigError(f"--set {key}={raw}: {error.message} (in the {where})", hint=hint)


def _dataset_general_schema() -> dict:
    return load_schema(DATASET_CONFIG)["$defs"]["general"]["properties"]


def parse_override(text: str, script: str) -> list[Override]:
    """One `key=value` (optionally `dataset.key=value` / `training.key=value`).

    Returns the overrides to apply: a key both files know (e.g. resolution,
    caption_extension) goes to the dataset config, which kohya lets win, and also to
    the training config with the type that file needs.
    """
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key=value", hint="e.g. --set network_dim=16")
    scope = None
    if key.startswith(("dataset.", "training.")):
        scope, _, key = key.partition(".")
    value = _parse_value(raw)
    train_props = training_properties(script)
    general_props = _dataset_general_schema()
    in_training = key in train_props
    in_general = key in general_props and key != "batch_size"
    if key == "batch_size" and scope != DATASET:
        raise ConfigError(
            f"--set {text}: unknown kohya option 'batch_size'",
            hint="did you mean train_batch_size? kohyagen keeps the batch size in the "
            "training config",
        )
    if (scope == TRAINING and not in_training) or (scope == DATASET and key not in general_props):
        valid = train_props if scope == TRAINING else general_props
        aliases = TRAINING_ALIASES if scope == TRAINING else DATASET_ALIASES
        guess = suggest(key, valid, aliases)
        raise ConfigError(
            f"--set {text}: {key!r} is not a kohya option of the {scope} config",
            hint=f"did you mean {guess}?" if guess else None,
        )
    if not in_training and not in_general:
        guess = suggest(key, training_keys(script), TRAINING_ALIASES) or suggest(
            key, dataset_level_keys()["general"], DATASET_ALIASES
        )
        raise ConfigError(
            f"--set {text}: unknown kohya option {key!r}",
            hint=f"did you mean {guess}?" if guess else "see `kohyagen lint` for the valid keys",
        )
    _check_edges(key, value, text)
    values = {DATASET: value, TRAINING: value}
    if key == "resolution":
        values = _resolution_values(value, text)
    out = []
    if scope != TRAINING and (in_general or scope == DATASET):
        typed = _typed(key, raw, values[DATASET], general_props[key], "dataset config")
        out.append(Override(DATASET, key, typed, text))
    if scope != DATASET and in_training:
        typed = _typed(key, raw, values[TRAINING], train_props[key], "training config")
        out.append(Override(TRAINING, key, typed, text))
    return out


def _check_edges(key: str, value: Any, text: str) -> None:
    """Values the schema's types let through but kohya cannot use: numbers out of range
    (batch 0 divides by zero in kohya's step count), names that are not file names."""
    problem = check_option_value(key, value)
    if key == "output_name" and isinstance(value, str):
        problem = name_problem(value, "output_name")
    elif key == "caption_extension" and isinstance(value, str):
        problem = caption_extension_problem(value)
    if problem is not None:
        raise UsageError(f"--set {text}: {problem}")


def _resolution_values(value: Any, text: str) -> dict[str, Any]:
    """One resolution in each file's own spelling: 512 / [768, 512] and "512" / "768,512"."""
    parts = value if isinstance(value, list) else str(value).split(",")
    try:
        sides = [int(str(p).strip()) for p in parts]
    except ValueError:
        return {DATASET: value, TRAINING: value}  # the schema explains what is wrong
    if not 1 <= len(sides) <= 2:
        raise ConfigError(f"--set {text}: give one side or width,height", hint="e.g. 768,512")
    if len(sides) == 2 and sides[0] == sides[1]:
        sides = sides[:1]
    dataset_value: Any = sides[0] if len(sides) == 1 else sides
    return {DATASET: dataset_value, TRAINING: ",".join(map(str, sides))}


def _find_table(doc: tomlkit.TOMLDocument, key: str) -> Table | tomlkit.TOMLDocument | None:
    if key in doc and not isinstance(doc[key], Table):
        return doc
    for value in doc.values():
        if isinstance(value, Table) and key in value:
            return value
    return None


def _set(container: Any, key: str, value: Any, text: str, comment: str | None = None) -> None:
    item = tomlkit.item(value)
    item.comment(comment or f"set with --set {text}")
    container[key] = item


def _refuse_shadowed(dataset: tomlkit.TOMLDocument, ov: Override) -> None:
    """A [general] value that every subset sets for itself would change nothing in kohya."""
    subsets = [sub for ds in dataset.get("datasets", []) for sub in ds.get("subsets", [])]
    if subsets and all(ov.key in sub for sub in subsets):
        raise ConfigError(
            f"--set {ov.text}: every subset states its own {ov.key} (from its N_name/ folder), "
            "which kohya uses instead of [general]",
            hint="rename the folders (e.g. 3_sks for 3 repeats), or edit the subsets in "
            "dataset_config.toml",
        )


def apply_overrides(
    training: tomlkit.TOMLDocument,
    dataset: tomlkit.TOMLDocument,
    overrides: list[Override],
) -> None:
    """Apply in place. Training keys not yet present go into an [overrides] table.

    A key both files know is set in the dataset config's [general] (kohya lets the
    dataset config win); the training config gets it too only where it already had
    the key, so the two never disagree.
    """
    dataset_keys = {ov.key for ov in overrides if ov.target == DATASET}
    for ov in overrides:
        if ov.target == DATASET:
            _refuse_shadowed(dataset, ov)
            general = dataset.get("general")
            if general is None:
                general = tomlkit.table()
                dataset["general"] = general
            _set(general, ov.key, ov.value, ov.text, ov.comment)
            continue
        container = _find_table(training, ov.key)
        if container is None and ov.key in dataset_keys:
            continue
        if container is None:
            if "overrides" not in training:
                table = tomlkit.table()
                table.add(tomlkit.comment("options set with kohyagen config --set"))
                training["overrides"] = table
            container = training["overrides"]
        _set(container, ov.key, ov.value, ov.text, ov.comment)
