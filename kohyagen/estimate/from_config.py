"""Estimates of the plan `kohyagen config` writes: one plan, so the commands agree.

`estimate` used to assume its own batch size and no gradient checkpointing, and so
said "does not fit" for kohyagen's own SDXL preset on a 24 GB card, which `config`
fits with gradient checkpointing. These functions take the plan from the config
(estimate CONFIG.toml) or from what config would render (estimate DATASET).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kohyagen.config.plan_values import training_values
from kohyagen.config.schema import (
    SDXL_TRAIN_NETWORK,
    flatten_training_config,
    is_dataset_config,
    load_toml,
    script_for_config,
)
from kohyagen.dataset.layout import IMAGE_EXTENSIONS
from kohyagen.errors import ConfigError, KohyagenError


@dataclass(frozen=True)
class Plan:
    """What an estimate needs of a training plan; None where the plan does not say."""

    model: str | None
    images: int | None
    images_x_repeats: int | None
    steps_per_epoch: int | None
    values: dict[str, Any]
    source: str  # where the plan came from, said in the estimate's notes


def preset_plan(model: str, gpu: str) -> dict[str, Any] | None:
    """batch size, gradient checkpointing, optimizer and trained parts that `kohyagen
    config` chooses for model x GPU; None when either is no preset or nothing fits."""
    from kohyagen.config import presets
    from kohyagen.config.family_settings import dit_plan
    from kohyagen.config.training_plan import plan_training

    try:
        preset, gpu_preset = presets.get_model(model), presets.get_gpu(gpu)
        if preset.family is not None:
            # a DiT family's batch, checkpointing and optimizer come with its fp8 and
            # blocks_to_swap choice (config.family_settings), not from the U-Net planner
            dit = dit_plan(preset, gpu_preset)
            return {
                "batch_size": dit.batch_size,
                "gradient_checkpointing": dit.gradient_checkpointing,
                "optimizer": dit.optimizer,
                "unet_only": True,
            }
        plan = plan_training(preset, gpu_preset)
    except KohyagenError:
        return None
    return {
        "batch_size": plan.batch_size,
        "gradient_checkpointing": plan.gradient_checkpointing,
        "optimizer": plan.optimizer,
        "unet_only": plan.unet_only,
    }


def rendered_plan(dataset: str | Path, *, model: str, gpu: str, epochs: int | None) -> Plan:
    """The plan `kohyagen config DATASET --model M --gpu G` would write (nothing written)."""
    from kohyagen.config.render import render_configs
    from kohyagen.toml_compat import tomllib

    rendered = render_configs(dataset, model=model, gpu=gpu, out_dir="unused", epochs=epochs)
    values = training_values(dict(rendered.training), tomllib.loads(rendered.dataset_text))
    plan = rendered.plan
    return Plan(
        model, plan.get("images"), plan.get("images_x_repeats"), plan.get("steps_per_epoch"),
        values, "the configs `kohyagen config` would write",
    )  # fmt: skip


def config_plan(path: str | Path) -> Plan:
    """The plan of an existing training config (and the dataset config it names)."""
    path = Path(path)
    doc = load_toml(path)
    if is_dataset_config(doc.data):
        raise ConfigError(
            "this is a dataset config", path=path, hint="pass the training config that names it"
        )
    flat, _ = flatten_training_config(doc.data)
    script = script_for_config(doc.text, flat)
    model = "sdxl" if script == SDXL_TRAIN_NETWORK else "sd2" if flat.get("v2") else "sd15"
    dataset_data: dict[str, Any] = {}
    images = seen = None
    named = flat.get("dataset_config")
    if isinstance(named, str) and named:
        dataset_path = Path(named).expanduser()
        dataset_path = dataset_path if dataset_path.is_absolute() else path.parent / dataset_path
        dataset_data = load_toml(dataset_path).data
        images, seen = _count_subsets(dataset_data, base=dataset_path.parent)
    values = training_values(flat, dataset_data)
    per_epoch = math.ceil(seen / values["batch_size"]) if seen else None
    return Plan(model, images, seen, per_epoch, values, f"{path.name}")


def _count_subsets(dataset: dict[str, Any], *, base: Path) -> tuple[int | None, int | None]:
    """Images and images x repeats of the dataset config's training subsets (kohya reads
    each image_dir without subfolders; regularisation subsets do not add steps)."""
    images = seen = 0
    for block in dataset.get("datasets") or []:
        for subset in (block or {}).get("subsets") or []:
            folder = subset.get("image_dir") if isinstance(subset, dict) else None
            if not isinstance(folder, str) or subset.get("is_reg"):
                continue
            root = Path(folder).expanduser()
            root = root if root.is_absolute() else base / root
            try:
                count = sum(1 for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            except OSError:
                continue
            repeats = subset.get("num_repeats", 1)
            images += count
            seen += count * (repeats if isinstance(repeats, int) and repeats > 0 else 1)
    return (images or None), (seen or None)


DEFAULT_EPOCHS = 10


def plan_for(
    dataset: str | Path | None,
    *,
    images: int | None,
    model: str,
    gpu: str,
    epochs: int | None,
    repeats: int | None,
) -> Plan:
    """The plan `kohyagen estimate` estimates: a training config's own, what `kohyagen
    config` would render for a kohya train dir, else the preset's choices for model x GPU
    with the dataset's counts (a plain folder counts as `kohyagen run` would prepare it)."""
    from kohyagen.estimate.dataset_counts import count_dataset
    from kohyagen.estimate.plan import DEFAULT_REPEATS

    if dataset is not None and Path(dataset).suffix.lower() == ".toml":
        plan = config_plan(dataset)
        if epochs is not None:
            plan.values["epochs"] = epochs
        return plan
    preset = preset_plan(model, gpu) or {}
    if dataset is not None:
        if (Path(dataset) / "").is_dir() and repeats is None:
            try:
                return rendered_plan(dataset, model=model, gpu=gpu, epochs=epochs)
            except KohyagenError:
                pass  # not a kohya train dir (or no preset for this GPU): counted below
        counts = count_dataset(dataset, model=model, batch_size=1, repeats=repeats)
        n: int | None = counts.images
        seen = counts.images_x_repeats
    else:
        n, seen = images, (images or 0) * (repeats or DEFAULT_REPEATS)
    values = {"epochs": epochs or DEFAULT_EPOCHS, "resolution": None,
              "gradient_accumulation_steps": 1, **preset}  # fmt: skip
    source = "the preset `kohyagen config` uses" if preset else "defaults"
    return Plan(model, n, seen, None, values, source)
