"""kohya's configuration contract as JSON Schema: loading, validating, defaults.

The schemas in schemas/ (made by scripts/make_schemas.py from sd-scripts' own
argument tables) are the single definition of what a kohya config may hold.
This module loads them, reads TOML the way kohya does (top-level tables are
flattened into one namespace), and validates with two TOML facts added to JSON
Schema: an "integer" is a TOML integer only, and "x-strict-float" rejects an
integer literal where voluptuous wants a float.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator, TypeChecker, validators

from kohyagen import safe_io
from kohyagen.errors import ConfigError
from kohyagen.resources import schema_path
from kohyagen.toml_compat import TOO_DEEP, tomllib

TRAIN_NETWORK = "train_network"
SDXL_TRAIN_NETWORK = "sdxl_train_network"
FLUX_TRAIN_NETWORK = "flux_train_network"
SD3_TRAIN_NETWORK = "sd3_train_network"
LUMINA_TRAIN_NETWORK = "lumina_train_network"
HUNYUAN_IMAGE_TRAIN_NETWORK = "hunyuan_image_train_network"
ANIMA_TRAIN_NETWORK = "anima_train_network"
# Every kohya LoRA script with a schema, the U-Net ones first (the order ties are broken in).
SCRIPTS = (
    TRAIN_NETWORK,
    SDXL_TRAIN_NETWORK,
    FLUX_TRAIN_NETWORK,
    SD3_TRAIN_NETWORK,
    LUMINA_TRAIN_NETWORK,
    HUNYUAN_IMAGE_TRAIN_NETWORK,
    ANIMA_TRAIN_NETWORK,
)
# A model file name that says which family it is (for hand-written configs without the
# kohyagen marker and without a family's own keys).
MODEL_NAME_SCRIPTS = (
    (r"(^|[^a-z])(sdxl|xl)([^a-z]|$)|sd_xl", SDXL_TRAIN_NETWORK),
    (r"flux|chroma", FLUX_TRAIN_NETWORK),
    (r"sd3|stable-diffusion-3", SD3_TRAIN_NETWORK),
    (r"lumina", LUMINA_TRAIN_NETWORK),
    (r"hunyuan", HUNYUAN_IMAGE_TRAIN_NETWORK),
    (r"anima", ANIMA_TRAIN_NETWORK),
)
DATASET_CONFIG = "dataset_config"

# kohyagen writes this comment as the first line of a rendered training config so that
# `kohyagen train` and `lint` know which script it is for; kohya ignores comments.
SCRIPT_MARKER = re.compile(r"^#\s*kohyagen-script:\s*(\w+)(?:\.py)?\s*$", re.MULTILINE)


def _is_toml_integer(checker: TypeChecker, instance: object) -> bool:
    # TOML true is a Python bool, which is an int: kohya's int options must not accept it
    return isinstance(instance, int) and not isinstance(instance, bool)


def _strict_float(
    validator: Any, value: bool, instance: object, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    # voluptuous' float type (config_util.py) rejects an int: validation_split = 1 fails
    if value and isinstance(instance, int) and not isinstance(instance, bool):
        yield jsonschema.ValidationError(
            f"{instance!r} is an integer; kohya needs a float here (write {instance}.0)"
        )


_TYPE_CHECKER = Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_toml_integer)
TomlValidator = validators.extend(
    Draft202012Validator,
    validators={"x-strict-float": _strict_float},
    type_checker=_TYPE_CHECKER,
)


@cache
def load_schema(name: str) -> dict:
    """name: "train_network", "sdxl_train_network" or "dataset_config"."""
    path = schema_path(f"{name}.schema.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"unknown schema {name!r}", path=path) from exc


def validator_for(name: str) -> Draft202012Validator:
    return TomlValidator(load_schema(name))


def training_properties(script: str) -> dict[str, dict]:
    return load_schema(script)["properties"]


def training_defaults(script: str) -> dict[str, Any]:
    """kohya's argparse defaults for every option that has one."""
    return {
        key: prop["default"]
        for key, prop in training_properties(script).items()
        if "default" in prop
    }


@dataclass(frozen=True)
class TomlDocument:
    path: Path
    text: str
    data: dict[str, Any]


def load_toml(path: str | Path) -> TomlDocument:
    """Read a TOML file; a missing or malformed file is a ConfigError naming it."""
    path = Path(path)
    try:
        # a FIFO would block and /dev/zero never end: regular files only, and bounded
        text = safe_io.read_text(path, safe_io.TOML_LIMIT)
    except FileNotFoundError as exc:
        raise ConfigError("file not found", path=path, hint="check the path") from exc
    except (IsADirectoryError, safe_io.NotRegularFile) as exc:
        if path.is_dir():
            raise ConfigError("expected a TOML file, got a folder", path=path) from exc
        raise ConfigError(
            f"cannot read file: {exc.strerror}", path=path, hint="pass the TOML file itself"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("not a UTF-8 text file", path=path) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", path=path) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"malformed TOML: {exc}", path=path, hint="fix the syntax at that line"
        ) from exc
    except RecursionError:
        raise ConfigError(TOO_DEEP, path=path, hint="no kohya option nests that deep") from None
    return TomlDocument(path, text, data)


def flatten_training_config(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str | None]]:
    """Flatten top-level tables as kohya does (later sections win).

    Returns the flat options and, for each key, the section it came from (None for a
    top-level key). Tables nested deeper than one level stay values, as in kohya.
    """
    flat: dict[str, Any] = {}
    origin: dict[str, str | None] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            # read_config_from_file (train_util.py:4748-4758) ignores section names and lets a
            # later section's key overwrite an earlier one
            for sub_key, sub_value in value.items():
                flat[sub_key] = sub_value
                origin[sub_key] = key
        else:
            flat[key] = value
            origin[key] = None
    return flat, origin


def is_dataset_config(data: dict[str, Any]) -> bool:
    """A dataset config has [general] and/or [[datasets]] and no training options."""
    # [[datasets]] is what kohya requires of a dataset config; [general] alone trains nothing
    return "datasets" in data and isinstance(data.get("datasets"), list)


def script_for_config(text: str, flat: dict[str, Any]) -> str:
    """Which kohya script a training config is for.

    The kohyagen marker comment wins; then options only one script has (t5xxl and ae:
    FLUX; clip_g: SD3; gemma2: Lumina; byt5: HunyuanImage; qwen3: Anima; ...); then,
    when some option is not train_network's, the script whose table knows most of the
    options; then a model name that names the family. Everything else is train_network.
    """
    marker = SCRIPT_MARKER.search(text)
    if marker and marker.group(1) in SCRIPTS:
        return marker.group(1)
    # an option only one LoRA script defines means the config is for that script
    keys = set(flat)
    owners = {script: keys & _own_keys(script) for script in SCRIPTS}
    claimed = [script for script, own in owners.items() if own]
    if len(claimed) == 1:
        return claimed[0]
    if keys - set(training_properties(TRAIN_NETWORK)):
        known = {s: len(keys & set(training_properties(s))) for s in SCRIPTS}
        return max(SCRIPTS, key=lambda s: (known[s], -SCRIPTS.index(s)))
    model = str(flat.get("pretrained_model_name_or_path", "")).lower()
    for pattern, script in MODEL_NAME_SCRIPTS:
        if re.search(pattern, model):
            return script
    return TRAIN_NETWORK


@cache
def _own_keys(script: str) -> frozenset[str]:
    """Options of this script that no other LoRA script has."""
    others: set[str] = set()
    for other in SCRIPTS:
        if other != script:
            others |= set(training_properties(other))
    return frozenset(set(training_properties(script)) - others)
