"""One kohya argparse action as the JSON Schema property its TOML value must match.

Shared by scripts/make_schemas.py (the bundled schemas/) and config.kohya_tables (the option
table of a found sd-scripts checkout), so that lint judges a value the same way whichever
table it checks against. Values read through --config_file skip argparse's conversion, so
the property describes the TOML value kohya receives, not the command-line text.
"""

from __future__ import annotations

from typing import Any

# kohya's int_or_float converter (train_util) also takes "10%" as a string
PERCENT_STRING = {"type": "string", "pattern": r"^\d+(\.\d+)?%$"}
_SCALARS: dict[str | None, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "str": {"type": "string"},
    "Path": {"type": "string"},
    None: {"type": "string"},
    "int_or_float": {"anyOf": [{"type": "number"}, PERCENT_STRING]},
}


def argument_property(arg: dict[str, Any], *, provenance: bool = False) -> dict[str, Any]:
    """The property for one entry of an *.args.json table; provenance adds "x-kohya"
    (option, action, type, nargs, where it is defined) for the generated schemas."""
    action = arg["action"]
    if action in ("store_true", "store_false"):
        prop: dict[str, Any] = {"type": "boolean"}
    else:
        # a converter of a newer checkout that kohyagen does not know: accept what TOML gives
        item = dict(_SCALARS.get(arg.get("type"), {}))
        choices = [c for c in (arg.get("choices") or []) if c is not None]
        if choices:
            item = {**item, "enum": choices}
        if arg.get("nargs") in ("*", "+") or action == "append":
            prop = {"type": "array", "items": item}
            if arg["dest"] == "text_encoder_lr":
                # train_network.py accepts a single float here as well as a list
                prop = {"anyOf": [item, prop]}
        else:
            prop = item
    default = arg.get("default")
    # a string default of a typed option is argparse text, not the value kohya would see
    if default is not None and not (isinstance(default, str) and arg.get("type") not in ("str", None)):
        prop["default"] = default
    if provenance:
        prop["x-kohya"] = {
            "option": arg["option_strings"][0],
            "action": action,
            "type": arg.get("type"),
            "nargs": arg.get("nargs"),
            "defined_at": arg.get("defined_at"),
        }
    return prop
