"""What a run's model family adds to its report: which apps load its LoRA, and FLUX's
gradient-norm curve (networks.lora_flux logs `norm/avg_grad_norm` every step)."""

from __future__ import annotations

import math
from typing import Any

from kohyagen.config.families import family_of_script
from kohyagen.config.presets import get_model

GRAD_NORM_TAG = "norm/avg_grad_norm"
UNET_PRESETS = {"train_network": "sd15", "sdxl_train_network": "sdxl"}


def lora_format(script: str, training: dict[str, Any]) -> dict[str, str]:
    """The family a run trained, kohya's script, and the apps that load its LoRA file."""
    name = UNET_PRESETS.get(script) or family_of_script(script) or "sd15"
    if name == "flux" and training.get("model_type") == "chroma":
        name = "chroma"
    preset = get_model(name)
    return {"family": preset.label, "script": f"{script}.py", "apps": preset.apps}


def grad_norm(scalars: dict[str, list[tuple[int, float]]]) -> dict[str, Any] | None:
    """First, last and largest logged gradient norm, and the first step it was not finite."""
    points = scalars.get(GRAD_NORM_TAG) or []
    if not points:
        return None
    finite = [v for _s, v in points if math.isfinite(v)]
    return {
        "tag": GRAD_NORM_TAG,
        "first": finite[0] if finite else None,
        "last": finite[-1] if finite else None,
        "max": max(finite) if finite else None,
        "not_finite_from_step": divergence_step(scalars),
    }


def divergence_step(scalars: dict[str, list[tuple[int, float]]]) -> int | None:
    """The first step whose gradient norm is NaN or infinite (training diverged there)."""
    return next((s for s, v in scalars.get(GRAD_NORM_TAG) or [] if not math.isfinite(v)), None)
