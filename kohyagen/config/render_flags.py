"""The inputs of a render that come from the user's flags: --set overrides (typed by
kohya's schema, applied with tomlkit so comments survive), the epochs and batch they
fix, the bucket range around a --set resolution, and a DiT family's model files."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import tomlkit

from kohyagen.config.model_files import resolve_model_files, role_of
from kohyagen.config.overrides import Override, apply_overrides, parse_override
from kohyagen.config.presets import ModelPreset, Setting
from kohyagen.config.render_values import bucket_range
from kohyagen.errors import ConfigError


def family_files(
    model: ModelPreset, base_model: str | None, given: dict[str, str] | None, cwd: Path,
    fetch: bool, on_progress: Callable[[str], None] | None,
) -> dict[str, str]:  # fmt: skip
    """The DiT family's model files, checked ({} for SD1/2/XL)."""
    check_model_file_roles(model, given or {})
    if model.family is None:
        return {}
    wanted = dict(given or {})
    if base_model is not None:
        wanted.setdefault(model.family.files[0].role, base_model)
    return resolve_model_files(
        model.name, model.family, wanted, cwd=cwd, fetch=fetch, on_progress=on_progress
    )


def check_model_file_roles(model: ModelPreset, given: Iterable[str]) -> None:
    """ConfigError for a --model-file the model does not take. Cheap (no file is looked
    at), so that run refuses a typo before its dataset stages, not in its config stage."""
    keys = list(given)
    if model.family is None:
        if keys:
            raise ConfigError(
                f"{model.name} takes one base model, not --model-file",
                hint="use --base-model (or --set pretrained_model_name_or_path=...)",
            )
        return
    for key in keys:
        role_of(model.name, model.family, key)


def file_overrides(model: ModelPreset, parsed: list[Override]) -> tuple[list, dict[str, str]]:
    """--set clip_l=PATH and friends go through the model-file check like --model-file."""
    if model.family is None:
        return parsed, {}
    options = {f.option for f in model.family.files}
    files = {
        ov.key: str(ov.value)
        for ov in parsed
        if ov.target == "training" and ov.key in options and isinstance(ov.value, str)
    }
    return [ov for ov in parsed if ov.key not in files or ov.target != "training"], files


def epochs_from_overrides(
    parsed: list[Override], epochs: int | None, settings: dict[str, Setting]
) -> int | None:
    # Values the plan derives others from (save interval, warmup, bucket range) are taken
    # from --set too, so that an override does not leave them computed for another run.
    set_training = {ov.key: ov.value for ov in parsed if ov.target == "training"}
    set_epochs = set_training.get("max_train_epochs")
    if epochs is not None and set_epochs is not None and set_epochs != epochs:
        raise ConfigError(
            f"--epochs {epochs} and --set max_train_epochs={set_epochs} disagree",
            hint="give the number of epochs once",
        )
    if epochs is None and isinstance(set_epochs, int):
        epochs = set_epochs
    if isinstance(set_training.get("train_batch_size"), int):
        settings["train_batch_size"] = Setting(set_training["train_batch_size"], "set with --set")
    return epochs


def parse_overrides(overrides: Iterable[str | Sequence[str]], script: str) -> list[Override]:
    parsed: list[Override] = []
    for item in overrides:
        parsed.extend(parse_override(item if isinstance(item, str) else "=".join(item), script))
    return parsed


def bucket_range_overrides(parsed: list[Override]) -> list[Override]:
    """min/max_bucket_reso around a --set resolution, unless those are set too."""
    given = {ov.key for ov in parsed if ov.target == "dataset"}
    res = next((ov for ov in parsed if ov.key == "resolution" and ov.target == "dataset"), None)
    if res is None:
        return []
    try:
        sides = [int(v) for v in str(res.value).replace(" ", "").strip("[]()").split(",")]
    except ValueError:
        return []  # lint reports the malformed resolution
    low, _ = bucket_range(min(sides))
    _, high = bucket_range(max(sides))
    out = []
    if "min_bucket_reso" not in given:
        out.append(Override("dataset", "min_bucket_reso", low, res.text))
    if "max_bucket_reso" not in given:
        out.append(Override("dataset", "max_bucket_reso", high, res.text))
    return out


def apply_text_overrides(
    training_text: str, dataset_text: str, parsed: list[Override]
) -> tuple[str, str]:
    if not parsed:
        return training_text, dataset_text
    training_doc = tomlkit.parse(training_text)
    dataset_doc = tomlkit.parse(dataset_text)
    apply_overrides(training_doc, dataset_doc, parsed)
    return tomlkit.dumps(training_doc), tomlkit.dumps(dataset_doc)
