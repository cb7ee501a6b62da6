"""networks.lora's network_args ("key=value" strings), parsed as kohya reads them.

config.py refuses keys that are not in options.NETWORK_ARGS before training starts.
"""

from __future__ import annotations

from typing import Any

from kohyagen.errors import ConfigError


def _network_args(values: list[str] | None) -> dict[str, str]:
    raw = dict(str(v).partition("=")[::2] for v in values or [])
    return {k.strip(): v.strip() for k, v in raw.items()}


def _float_arg(raw: dict[str, str], key: str) -> float | None:
    if key not in raw:
        return None
    try:
        return float(raw[key])
    except ValueError as exc:
        raise ConfigError(
            f"network_args {key}={raw[key]!r} is not a number",
            hint=f'write network_args = ["{key}=0.1"]',
        ) from exc


def dropout_args(values: list[str] | None) -> dict[str, float | None]:
    """rank_dropout / module_dropout from network_args, for LoRANetwork.set_dropout."""
    raw = _network_args(values)
    return {"rank": _float_arg(raw, "rank_dropout"), "module": _float_arg(raw, "module_dropout")}


def loraplus_ratios(values: list[str] | None) -> dict[str, float | None]:
    """LoRA+ ratios for param_groups: the side's own ratio, else loraplus_lr_ratio (kohya)."""
    raw = _network_args(values)
    common = _float_arg(raw, "loraplus_lr_ratio")
    return {
        "unet_plus_ratio": _float_arg(raw, "loraplus_unet_lr_ratio") or common,
        "text_encoder_plus_ratio": _float_arg(raw, "loraplus_text_encoder_lr_ratio") or common,
    }


def conv_args(values: list[str] | None) -> dict[str, Any]:
    """conv_dim / conv_alpha from network_args (config.py refuses unknown keys)."""
    raw = _network_args(values)
    if "conv_dim" not in raw:
        return {}
    try:
        return {
            "conv_rank": int(raw["conv_dim"]),
            "conv_alpha": float(raw.get("conv_alpha", 1.0)),  # kohya's default is 1
        }
    except ValueError as exc:
        raise ConfigError(
            f"network_args conv_dim/conv_alpha must be numbers, got {values!r}",
            hint='write network_args = ["conv_dim=8", "conv_alpha=4"]',
        ) from exc
