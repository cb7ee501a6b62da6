"""Each option of a training config on its own: is it kohya's, and what does its value do?

kohya reads --config_file into its namespace without argparse (train_util.read_config_from_file
sets the values with setattr-like parsing of the TOML), so three facts decide severity:

- an unknown key is dropped without a word: an error where the user's intent is lost
  (`epoch = 10` leaves max_train_epochs unset), a warning where nothing is lost (the
  value is kohya's default anyway, or the key only means something to a GUI);
- choices are never checked: a value outside them is used as is, and what kohya's code
  then does with it (crash, fall back, ignore) decides the severity (`choice_finding`);
- TOML types are not converted: a wrong type reaches kohya's code as it is.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from kohyagen.config.keys import TRAINING_ALIASES, all_dataset_keys, suggest
from kohyagen.config.lint_rules import finding, type_finding
from kohyagen.config.schema import TomlValidator
from kohyagen.findings import Finding, Severity

# Keys kohya_ss GUI (and similar front ends) write for their own widgets. kohya never
# reads them, and the value they hold is carried by a real option as well.
GUI_ONLY_KEYS = {
    "noise_offset_type": "a GUI selector between noise_offset and multires_noise_iterations, "
    "which kohya reads directly",
    "LoRA_type": "a GUI selector; network_module and network_args say the LoRA type to kohya",
    "model_list": "a GUI model picker; pretrained_model_name_or_path is what kohya loads",
    "sdxl": "a GUI checkbox; the script (sdxl_train_network.py) decides SDXL for kohya",
    "sdxl_checkbox": "a GUI checkbox; the script (sdxl_train_network.py) decides SDXL for kohya",
    "save_as_bool": "a GUI field; save_model_as is what kohya reads",
    "model_train_type": "lora-scripts' selector of the training script; the script launched "
    "decides for kohya",
    "additional_parameters": "the GUI's extra command-line text, which kohya never reads from "
    "the file",
}
# A rename is suggested only where the meaning is the same, not only the spelling:
# kohya_ss's lr_warmup is a percentage of the steps, lr_warmup_steps a count (or a ratio < 1).
NOT_THE_SAME = {
    "lr_warmup": "kohya_ss GUI's lr_warmup is a percentage; kohya reads lr_warmup_steps, "
    "a step count (or a fraction of the steps when below 1)",
}
# kohya's sample_sampler names for the sampler names of A1111/ComfyUI people write.
SAMPLER_NAMES = {
    "dpmpp_2m": "dpmsolver++", "dpmpp_2m_karras": "dpmsolver++", "dpm++_2m": "dpmsolver++",
    "dpm++ 2m": "dpmsolver++", "dpm++ 2m karras": "dpmsolver++", "dpmpp_sde": "dpmsolver++",
    "dpmpp_2m_sde": "dpmsolver++", "euler_ancestral": "euler_a", "euler a": "euler_a",
    "k_euler_ancestral": "k_euler_a", "dpm2": "dpm_2", "dpm2_a": "dpm_2_a", "unipc": "dpmsolver++",
    "lcm": "euler", "karras": "dpmsolver++",
}  # fmt: skip
_MUST_BE = {
    "string": "a string",
    "boolean": "true or false",
    "integer": "a whole number",
    "number": "a number",
    "array": "a list",
}


def nearest_sampler(value: str, choices: list[str]) -> str:
    low = value.strip().lower()
    if low in choices:
        return low
    if low in SAMPLER_NAMES:
        return SAMPLER_NAMES[low]
    close = difflib.get_close_matches(low, choices, n=1, cutoff=0.5)
    return close[0] if close else "euler_a"


def _choices(prop: dict) -> list | None:
    if "enum" in prop:
        return prop["enum"]
    return next((p["enum"] for p in prop.get("anyOf", []) if "enum" in p), None)


def choice_finding(file: str, key: str, value: Any, flat: dict, choices: list) -> Finding | None:
    """A value outside kohya's choices, judged by what kohya's code then does with it."""
    shown = f"{key} = {value!r}"
    err, warn = Severity.ERROR, Severity.WARNING
    if key == "max_token_length":
        # kohya: tokenizer_max_length = max_token_length + 2, read in chunks of 75 tokens
        if value == 75:
            return finding(warn, "no-effect", f"{shown} is the default length (75 tokens); "
                           "kohya's choices are 150 and 225", file, key,
                           "remove it (75 is the default)")  # fmt: skip
        # anything else is used as is: kohya's 75-token chunking was written for 150 and 225
        return finding(warn, "bad-choice", f"{shown} is not one of kohya's lengths (150, 225); "
                       "kohya does not check it and cuts prompts in 75-token chunks", file, key,
                       "max_token_length = 225")  # fmt: skip
    if key == "dynamo_backend":
        # only read when torch_compile is on (kohya passes it to accelerate's dynamo plugin)
        if not flat.get("torch_compile"):
            return None
        if str(value).lower() == "no":
            return finding(warn, "no-effect", f'{shown} turns torch.compile off again, so '
                           "torch_compile does nothing", file, key, 'dynamo_backend = "inductor"')  # fmt: skip
    if key == "sample_sampler" and isinstance(value, str):
        near = nearest_sampler(value, choices)
        # kohya's sampler lookup falls through to DDIM for a name it does not know
        return finding(warn, "unknown-sampler", f"{shown} is not one of kohya's samplers: kohya "
                       f"samples with DDIM instead; its nearest is {near!r}", file, key,
                       f'sample_sampler = "{near}"')  # fmt: skip
    if key == "huber_schedule" and flat.get("loss_type") not in ("huber", "smooth_l1"):
        return finding(warn, "no-effect", f"{shown} is only read with loss_type huber or "
                       "smooth_l1", file, key, "remove it")  # fmt: skip
    if key in ("resize_interpolation", "save_precision", "zero_stage", "offload_optimizer_device",
               "offload_param_device"):  # fmt: skip
        # kohya maps these with if/elif chains and keeps its default for anything else
        return finding(warn, "bad-choice", f"{shown} is not one of kohya's choices; kohya "
                       "falls back to its default", file, key, _choice_fix(key, value, choices))  # fmt: skip
    # mixed_precision/log_with (accelerate raises), loss_type (NotImplementedError),
    # console_log_level (logging raises), save_model_as (an unloadable file), the rest
    return finding(err, "bad-choice", f"{shown} is not one of kohya's choices for {key}; "
                   "kohya fails with it (it does not check choices read from a file)",
                   file, key, _choice_fix(key, value, choices))  # fmt: skip


def _choice_fix(key: str, value: Any, choices: list) -> str:
    real = [c for c in choices if c is not None]
    if isinstance(value, str):
        close = suggest(value, [str(c) for c in real])
        if close:
            return f'{key} = "{close}"'
    return "use one of: " + ", ".join(map(str, real))


def _must_be(key: str, prop: dict) -> str:
    from kohyagen.config.lint_disk import PATH_KEYS

    if key == "sample_prompts":
        return "the path of a prompts file"
    if key in PATH_KEYS:
        return "a path, written as a string"
    types = [prop.get("type")] + [p.get("type") for p in prop.get("anyOf", [])]
    names = [_MUST_BE[t] for t in types if isinstance(t, str) and t in _MUST_BE and t != "null"]
    if prop.get("type") == "array":
        return f'a list of strings, e.g. {key} = ["..."]'
    return " or ".join(dict.fromkeys(names)) or "another type"


def value_finding(file: str, key: str, value: Any, prop: dict, flat: dict) -> Finding | None:
    """The value of a known option: plain-worded type and choice problems."""
    if key == "resume" and value is False:
        # kohya: `if not args.resume` -- false behaves exactly like leaving it out
        return finding(Severity.WARNING, "no-effect", "resume = false is the same as no resume",
                       file, key, "remove it")  # fmt: skip
    if key == "sample_prompts" and isinstance(value, list):
        return finding(Severity.ERROR, "sample-prompts-array", "sample_prompts is a list; kohya "
                       "takes one prompts file path and fails at the first sample (TypeError)",
                       file, key, 'write the prompts one per line into a file and set '
                       'sample_prompts = "/abs/path/prompts.txt"')  # fmt: skip
    choices = _choices(prop)
    if choices is not None and not _fits(value, {k: v for k, v in prop.items() if k != "enum"}):
        choices = None  # a wrong type is said as such below
    if choices is not None and value not in choices:
        return choice_finding(file, key, value, flat, choices)
    if choices is not None:
        return None
    bad = type_finding(file, key, value, prop, key)
    if bad is None or bad.fix is not None:
        return bad
    shown = str(value).lower() if isinstance(value, bool) else repr(value)
    return finding(Severity.ERROR, "wrong-type", f"{key} = {shown}: {key} must be "
                   f"{_must_be(key, prop)}", file, key, f"give {key} {_must_be(key, prop)}, "
                   "or remove it")  # fmt: skip


def _fits(value: Any, prop: dict) -> bool:
    prop = {k: v for k, v in prop.items() if k != "anyOf"} if "anyOf" not in prop else {
        "anyOf": [{k: v for k, v in p.items() if k != "enum"} for p in prop["anyOf"]]
    }
    return not list(TomlValidator(prop).iter_errors(value))


def unknown_key_finding(
    file: str, key: str, value: Any, where: str, props: dict, flat: dict
) -> Finding:
    """An option kohya does not have: what is lost by kohya dropping it silently."""
    if key == "additional_parameters" and isinstance(value, str) and value.strip():
        return finding(Severity.ERROR, "unknown-key", f"additional_parameters{where} holds "
                       f"{value.strip()!r}: the GUI adds it to the command line, but kohya "
                       "ignores it in a config file", file, key,
                       "write those options as keys of this file")  # fmt: skip
    if key in GUI_ONLY_KEYS:
        return finding(Severity.WARNING, "gui-only-key", f"{key}{where} is not a kohya option: "
                       f"{GUI_ONLY_KEYS[key]}; kohya ignores it", file, key, "remove it, or keep "
                       "it for the GUI")  # fmt: skip
    if key in NOT_THE_SAME:
        return finding(Severity.ERROR, "unknown-key", f"unknown option {key!r}{where}: kohya "
                       f"ignores it; {NOT_THE_SAME[key]}", file, key,
                       "set lr_warmup_steps to the number of warm-up steps")  # fmt: skip
    if key in all_dataset_keys() and key not in TRAINING_ALIASES:
        return finding(Severity.ERROR, "dataset-key-in-training-config", f"{key!r}{where} is a "
                       "dataset_config.toml key; kohya ignores it in the training config", file,
                       key, "move it to dataset_config.toml ([general] or a subset)")  # fmt: skip
    guess = suggest(key, props, TRAINING_ALIASES)
    if guess is not None and not _fits(value, props[guess]):
        return finding(Severity.ERROR, "unknown-key", f"unknown option {key!r}{where}: kohya "
                       f"ignores it without a word (it is not {guess}: {guess} takes "
                       f"{_must_be(guess, props[guess])})", file, key,
                       "remove it, or set the kohya option that does what you meant")  # fmt: skip
    if guess is None:
        return finding(Severity.ERROR, "unknown-key", f"unknown option {key!r}{where}: kohya "
                       "ignores it without a word", file, key,
                       "remove it, or check the spelling against kohya's options")  # fmt: skip
    default = props[guess].get("default")
    if guess in flat:
        sev = Severity.WARNING if flat[guess] == value else Severity.ERROR
        return finding(sev, "unknown-key", f"unknown option {key!r}{where}: kohya ignores it and "
                       f"uses {guess} = {flat[guess]!r}", file, key, "remove it")  # fmt: skip
    if _same(value, default):
        return finding(Severity.WARNING, "unknown-key", f"unknown option {key!r}{where}: kohya "
                       f"ignores it, but {guess}'s default is {default!r} anyway", file, key,
                       f"rename it to {guess}")  # fmt: skip
    lost = f"so {guess} keeps its default ({default!r})" if default is not None else (
        f"so {guess} stays unset")
    if guess == "max_train_epochs" and "max_train_steps" not in flat:
        lost = "so kohya trains its default max_train_steps = 1600 instead"
    return finding(Severity.ERROR, "unknown-key", f"unknown option {key!r}{where}: kohya ignores "
                   f"it without a word, {lost}", file, key, f"rename it to {guess}")  # fmt: skip


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, bool) or isinstance(default, bool):
        return value is default
    if isinstance(value, (int, float)) and isinstance(default, (int, float)):
        return math.isclose(value, default)
    return value == default and default is not None
