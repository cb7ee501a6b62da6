"""An existing kohya LoRA file as a starting point: network_weights and dim_from_weights.

Reads a .safetensors LoRA, takes each module's rank and alpha from it, and loads its
weights into a LoRANetwork, refusing a file that does not fit with a ConfigError that
says why. Separate from lora.py, which defines the network itself and never reads a
file; setup, preview and merge use both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kohyagen.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from kohyagen.trainer.lora import LoRANetwork


def read_lora_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A kohya LoRA .safetensors file's tensors (ConfigError when missing or unreadable)."""
    from pathlib import Path

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError("network_weights file not found", path=path, hint="check the path")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ConfigError(
            f"network_weights is not a readable .safetensors LoRA: {exc}", path=path
        ) from exc


def dims_from_weights(path: str | Path) -> dict[str, tuple[int, float | int]]:
    """dim_from_weights: each module's (rank, alpha) in a LoRA file; a missing alpha is the
    rank, as kohya reads old files."""
    state = read_lora_file(path)
    dims: dict[str, tuple[int, float | int]] = {}
    for key, value in state.items():
        name, _, part = key.partition(".")
        if part == "lora_down.weight":
            alpha = state.get(f"{name}.alpha")
            dims[name] = (
                int(value.shape[0]),
                # kohya reads a file without alpha as alpha = rank
                alpha.item() if alpha is not None else value.shape[0],
            )
    if not dims:
        raise ConfigError(
            "network_weights has no lora_down weights", path=path, hint="use a kohya LoRA file"
        )
    return dims


def load_network_weights(network: LoRANetwork, path: str | Path) -> int:
    """network_weights: start from an existing kohya LoRA file; refuse one that does not fit."""
    state = read_lora_file(path)
    try:
        matched = network.load_kohya_weights(state)
    except RuntimeError as exc:  # shapes differ: another rank or another model
        raise ConfigError(
            f"network_weights does not fit this network: {exc}",
            path=path,
            hint="use a LoRA trained with the same network_dim on the same base model",
        ) from exc
    if not matched:
        raise ConfigError(
            "network_weights has no module of this network",
            path=path,
            hint="it was trained for another model family",
        )
    return matched
