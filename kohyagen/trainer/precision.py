"""full_fp16 / full_bf16: the LoRA weights themselves (and so their gradients and optimizer
state) in half precision, as kohya's experimental options do."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from kohyagen.trainer.lora import LoRANetwork
    from kohyagen.trainer.output import Console


def allow_fp16_unscale(scaler: Any) -> None:
    """Let a GradScaler unscale fp16 gradients (it refuses them by default, since fp16
    master weights lose small updates; full_fp16 accepts that to save memory)."""
    original = scaler._unscale_grads_

    def unscale(optimizer: Any, inv_scale: Any, found_inf: Any, allow_fp16: bool) -> Any:
        return original(optimizer, inv_scale, found_inf, True)

    scaler._unscale_grads_ = unscale


def apply_full_precision(
    network: LoRANetwork,
    args: SimpleNamespace,
    *,
    weight_dtype: torch.dtype,
    accelerator: Any,
    console: Console,
) -> bool:
    """Cast the network for full_fp16 / full_bf16; False when it stays in fp32.

    The mixed_precision pairing was checked when the config was read (kohya's assertion);
    here weight_dtype is fp32 only when training fell back to fp32 on a CPU.
    """
    import torch

    if not (args.full_fp16 or args.full_bf16):
        return False
    if weight_dtype == torch.float32:
        console.log("full_fp16 / full_bf16 ignored: training in fp32", level="WARNING")
        return False
    console.out(f"enable full {'fp16' if args.full_fp16 else 'bf16'} training.")
    network.to(weight_dtype)
    if args.full_fp16 and getattr(accelerator, "scaler", None) is not None:
        allow_fp16_unscale(accelerator.scaler)
    return True
