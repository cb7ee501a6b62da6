"""base_weights: LoRA files merged into the base model before training, as kohya does."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kohyagen.errors import ConfigError

if TYPE_CHECKING:
    from kohyagen.trainer.models import Components
    from kohyagen.trainer.output import Console


def merge_base_weights(
    components: Components,
    paths: list[str],
    multipliers: list[float] | None,
    *,
    sdxl: bool,
    console: Console,
) -> None:
    """Add each file's weight deltas (times its multiplier, 1.0 when not given) to the
    U-Net and text encoder weights in memory; the files are only read."""
    import torch

    from kohyagen.trainer.lora import LoRANetwork, lora_delta
    from kohyagen.trainer.lora_weights import dims_from_weights, read_lora_file

    for i, raw in enumerate(paths or []):
        path = Path(raw)
        multiplier = float(multipliers[i]) if multipliers and len(multipliers) > i else 1.0
        console.out(f"merging module: {path} with multiplier {multiplier}")
        network = LoRANetwork(
            components.unet,
            components.text_encoders,
            rank=1,
            alpha=1,
            sdxl=sdxl,
            dims=dims_from_weights(path),
        )
        try:
            matched = network.load_kohya_weights(read_lora_file(path))
        except RuntimeError as exc:
            raise ConfigError(f"base_weights does not fit this model: {exc}", path=path) from exc
        if not matched:
            raise ConfigError(
                "base_weights has no module of this model",
                path=path,
                hint="it was trained for another model family",
            )
        with torch.no_grad():
            for mod in [*network.text_encoder_loras, *network.unet_loras]:
                weight = mod._org[0].weight
                delta = lora_delta(mod).float().reshape(weight.shape) * multiplier
                weight.copy_((weight.float() + delta).to(weight.dtype))
    if paths:
        console.out(f"all weights merged: {', '.join(str(p) for p in paths)}")
