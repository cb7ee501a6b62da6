"""The numbers a kohya config trains with, as one plan: what estimate and run read.

kohya lets the dataset config win over the training config (batch_size, resolution),
so every reader that wants "the batch size this config trains with" must look in both,
in that order. Kept in one place so that `kohyagen run`'s estimate stage, `kohyagen
estimate CONFIG.toml` and `kohyagen estimate DATASET` compute the same plan.
"""

from __future__ import annotations

from typing import Any


def training_values(training: dict[str, Any], dataset_data: dict[str, Any]) -> dict[str, Any]:
    """batch size, epochs, resolution, ... as kohya will use them (dataset TOML wins).

    training: the flattened training config; dataset_data: the parsed dataset config."""
    general = dataset_data.get("general", {}) if isinstance(dataset_data, dict) else {}
    datasets = dataset_data.get("datasets", []) if isinstance(dataset_data, dict) else []
    first = datasets[0] if datasets and isinstance(datasets[0], dict) else {}

    def pick(key: str, train_key: str | None = None, default: Any = None) -> Any:
        for source in (first, general):
            if isinstance(source, dict) and key in source:
                return source[key]
        return training.get(train_key or key, default)

    resolution = pick("resolution")
    if isinstance(resolution, str):
        resolution = int(resolution.split(",")[0])
    elif isinstance(resolution, list):
        resolution = int(max(resolution))
    return {
        "batch_size": int(pick("batch_size", "train_batch_size", 1)),
        "epochs": int(training.get("max_train_epochs") or 1),
        "resolution": resolution,
        "gradient_checkpointing": bool(training.get("gradient_checkpointing", False)),
        "gradient_accumulation_steps": int(training.get("gradient_accumulation_steps", 1)),
        "optimizer": training.get("optimizer_type"),
        "unet_only": bool(training.get("network_train_unet_only", False)),
        "seed": training.get("seed"),
    }
