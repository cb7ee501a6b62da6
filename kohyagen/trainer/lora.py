"""LoRA on the modules kohya's networks.lora targets, saved in kohya's key format.

Targets: every Linear and 1x1 Conv2d inside the U-Net's Transformer2DModel blocks,
and every Linear in the text encoders' attention and MLP blocks. Each wrapped
module computes  org(x) + up(down(x)) * multiplier * alpha / rank,  with down
initialised kaiming-uniform and up at zero, so training starts from the base model.
Keys are `<prefix>_<module path with . -> _>.{lora_down.weight, lora_up.weight, alpha}`;
SDXL U-Net paths are renamed to the SGM layout (input_blocks / middle_block /
output_blocks) that kohya and A1111/ComfyUI use (the names: kohyagen.trainer.lora_names).
Reading an existing LoRA file into a network: kohyagen.trainer.lora_weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from kohyagen.trainer.lora_names import text_encoder_modules, unet_modules


class LoRAModule(nn.Module):
    def __init__(self, lora_name: str, org: nn.Module, rank: int, alpha: float | int | None):
        super().__init__()
        self.lora_name = lora_name
        if isinstance(org, nn.Conv2d):
            # A 3x3 conv (conv_dim) keeps its kernel, stride and padding in the down half.
            # torch types a Conv2d's kernel_size/stride/padding as tuple[int, ...] but its
            # constructor as tuple[int, int]: the same values, passed straight back.
            self.lora_down: nn.Conv2d | nn.Linear = nn.Conv2d(
                org.in_channels,
                rank,
                org.kernel_size,  # type: ignore[arg-type]
                org.stride,  # type: ignore[arg-type]
                org.padding,  # type: ignore[arg-type]
                bias=False,
            )
            self.lora_up: nn.Conv2d | nn.Linear = nn.Conv2d(rank, org.out_channels, 1, bias=False)
        else:
            linear = cast(nn.Linear, org)  # _targets yields only Linear and Conv2d modules
            self.lora_down = nn.Linear(linear.in_features, rank, bias=False)
            self.lora_up = nn.Linear(rank, linear.out_features, bias=False)
        # kohya's LoRAModule: no alpha (or 0) means alpha = rank, a scale of 1
        if alpha is None or alpha == 0:
            alpha = rank
        # Kept as given (int stays int) because kohya saves it that way.
        self.alpha_value = alpha
        self.register_buffer("alpha", torch.tensor(alpha))
        self.scale = float(alpha) / rank
        self.multiplier = 1.0
        self.dropout: float | None = None  # kohya's network_dropout, on the rank activations
        self.rank_dropout: float | None = None  # zeroes whole ranks per sample
        self.module_dropout: float | None = None  # skips the whole LoRA for a step
        # kohya's init: up at zero, so the wrapped module starts exactly as the base model
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self._org = [org]  # a list, so the base module is not part of this state dict
        self._org_forward: Callable[..., Any] | None = None

    def apply_to(self) -> None:
        org = self._org[0]
        self._org_forward = org.forward
        # monkey-patching forward, as kohya's apply_to does: the base model's code is untouched
        org.forward = self.forward

    def restore(self) -> None:
        if self._org_forward is not None:
            self._org[0].forward = self._org_forward
            self._org_forward = None

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        # only called through the base module, after apply_to() put this forward there
        assert self._org_forward is not None
        base = self._org_forward(x, *args, **kwargs)
        # multiplier 0 (a disabled LoRA) must cost nothing and give the base output exactly
        if self.multiplier == 0:
            return base
        # kohya draws module_dropout once per call with torch.rand, so the seed makes it repeatable
        if self.module_dropout and self.training and torch.rand(1) < self.module_dropout:
            return base
        # the base may run in fp16/fp8 while LoRA weights stay fp32 (or full_fp16): cast in, cast out
        lx = self.lora_down(x.to(self.lora_down.weight.dtype))
        if self.dropout and self.training:
            lx = torch.nn.functional.dropout(lx, p=self.dropout)
        scale = self.scale
        if self.rank_dropout and self.training:
            # One keep/drop per (sample, rank), broadcast over tokens or pixels; the rest are
            # scaled up as if the rank were that much smaller.
            keep = torch.rand((lx.size(0), lx.size(1) if lx.ndim == 4 else lx.size(-1)))
            keep = (keep > self.rank_dropout).to(lx.device, lx.dtype)
            if lx.ndim == 3:
                keep = keep.unsqueeze(1)
            elif lx.ndim == 4:
                keep = keep[:, :, None, None]
            lx = lx * keep
            scale = self.scale / (1.0 - self.rank_dropout)
        lx = self.lora_up(lx)
        return base + (lx * (self.multiplier * scale)).to(base.dtype)


@dataclass(frozen=True)
class MaxNormResult:
    """What scale_weight_norms did this step, for the bar and TensorBoard (kohya's names)."""

    keys_scaled: int
    mean_norm: float
    max_norm: float

    def postfix(self) -> dict[str, float]:
        # kohya's bar postfix names (train_network.py:1514-1516), sorted before avr_loss by tqdm
        return {"Keys Scaled": self.keys_scaled, "Average key norm": self.mean_norm}

    def logs(self) -> dict[str, float]:
        return {
            "max_norm/keys_scaled": self.keys_scaled,
            "max_norm/max_key_norm": self.max_norm,
            "norm/avg_key_norm": self.mean_norm,
        }


def lora_delta(mod: LoRAModule) -> torch.Tensor:
    """The module's weight change up @ down * alpha / rank, in the base weight's shape."""
    down, up = mod.lora_down.weight, mod.lora_up.weight
    if down.ndim == 4 and down.shape[2:] != (1, 1):
        # A k x k down conv followed by a 1x1 up: compose them into one k x k kernel.
        delta = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    elif down.ndim == 4:
        delta = (up.flatten(1) @ down.flatten(1))[:, :, None, None]
    else:
        delta = up @ down
    return delta * mod.scale


class LoRANetwork(nn.Module):
    def __init__(
        self,
        unet: nn.Module,
        text_encoders: list[nn.Module],
        *,
        rank: int,
        alpha: float | int | None,
        sdxl: bool,
        train_unet: bool = True,
        train_text_encoder: bool = True,
        conv_rank: int | None = None,
        conv_alpha: float | None = None,
        dims: dict[str, tuple[int, float | int]] | None = None,
    ) -> None:
        """dims (dim_from_weights): rank and alpha per module name, as read from a LoRA
        file; only those modules are made, conv layers included."""
        super().__init__()
        self.rank = rank

        def module(name: str, org: nn.Module, r: int, a: float | None) -> LoRAModule | None:
            if dims is None:
                return LoRAModule(name, org, r, a)
            if name not in dims:
                return None
            return LoRAModule(name, org, *dims[name])

        te_mods: list[LoRAModule | None] = []
        if train_text_encoder:
            te_mods = text_encoder_modules(text_encoders, module, rank, alpha, sdxl=sdxl)
        unet_mods: list[LoRAModule | None] = []
        if train_unet:
            # kohya's conv_dim: ResNet and resampler convs too
            with_conv = bool(conv_rank) or dims is not None
            unet_mods = unet_modules(
                unet,
                module,
                rank,
                alpha,
                conv=(conv_rank, conv_alpha) if with_conv else None,
                sdxl=sdxl,
            )
        self.text_encoder_loras = nn.ModuleList([m for m in te_mods if m is not None])
        self.unet_loras = nn.ModuleList([m for m in unet_mods if m is not None])

    def apply_to(self) -> None:
        for mod in [*self.text_encoder_loras, *self.unet_loras]:
            mod.apply_to()

    def restore(self) -> None:
        for mod in [*self.text_encoder_loras, *self.unet_loras]:
            mod.restore()

    def set_dropout(
        self, p: float | None, *, rank: float | None = None, module: float | None = None
    ) -> None:
        """network_dropout, and network_args rank_dropout / module_dropout (training only)."""
        for mod in [*self.text_encoder_loras, *self.unet_loras]:
            mod.dropout = p
            mod.rank_dropout = rank
            mod.module_dropout = module

    @torch.no_grad()
    def apply_max_norm(self, max_norm: float) -> MaxNormResult:
        """scale_weight_norms: shrink each module whose delta's norm exceeds max_norm back to
        it, splitting the factor evenly between up and down (kohya's max-norm rule)."""
        scaled = 0
        norms: list[float] = []
        for mod in [*self.text_encoder_loras, *self.unet_loras]:
            raw = lora_delta(mod).float().norm()
            # kohya's max-norm (networks/lora.py apply_max_norm_regularization): the clamp floor
            # keeps the ratio finite for a near-zero delta
            norm = raw.clamp(min=max_norm / 2)
            ratio = float(norm.clamp(max=max_norm) / norm)
            if ratio != 1:
                scaled += 1
                mod.lora_up.weight.mul_(ratio**0.5)
                mod.lora_down.weight.mul_(ratio**0.5)
            norms.append(float(raw) * ratio)
        return MaxNormResult(scaled, sum(norms) / max(1, len(norms)), max(norms, default=0.0))

    def kohya_state_dict(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for mod in [*self.text_encoder_loras, *self.unet_loras]:
            out[f"{mod.lora_name}.lora_down.weight"] = mod.lora_down.weight
            out[f"{mod.lora_name}.lora_up.weight"] = mod.lora_up.weight
            # alpha as written (an int stays int): loaders compute the scale from it
            out[f"{mod.lora_name}.alpha"] = torch.tensor(mod.alpha_value)
        return out

    def load_kohya_weights(self, state: dict[str, torch.Tensor]) -> int:
        """Load a kohya-format file's weights (network_weights); returns modules matched."""
        matched = 0
        for mod in [*self.text_encoder_loras, *self.unet_loras]:
            down = state.get(f"{mod.lora_name}.lora_down.weight")
            up = state.get(f"{mod.lora_name}.lora_up.weight")
            if down is None or up is None:
                continue
            # reshape: a 1x1 conv's weight may be stored 2-D, like a Linear's
            mod.lora_down.weight.data.copy_(down.reshape(mod.lora_down.weight.shape))
            mod.lora_up.weight.data.copy_(up.reshape(mod.lora_up.weight.shape))
            matched += 1
        return matched

    def param_groups(
        self,
        *,
        unet_lr: float,
        text_encoder_lr: float,
        unet_plus_ratio: float | None = None,
        text_encoder_plus_ratio: float | None = None,
    ) -> list[dict[str, Any]]:
        """Optimizer groups in kohya's order (text encoder first); a zero LR drops a group.

        With a LoRA+ ratio a side's lora_up weights get their own group ("<side> plus") at
        lr x ratio, after the side's lora_down group.
        """
        groups: list[dict[str, Any]] = []
        sides = (
            (self.text_encoder_loras, text_encoder_lr, text_encoder_plus_ratio, "textencoder"),
            (self.unet_loras, unet_lr, unet_plus_ratio, "unet"),
        )
        for loras, lr, ratio, desc in sides:
            if not len(loras):
                continue
            plain: list[nn.Parameter] = []
            plus: list[nn.Parameter] = []
            for mod in loras:
                for name, param in mod.named_parameters():
                    (plus if ratio is not None and "lora_up" in name else plain).append(param)
            for params, group_lr, suffix in ((plain, lr, ""), (plus, lr * (ratio or 0), " plus")):
                if params and group_lr:
                    groups.append({"params": params, "lr": group_lr, "desc": desc + suffix})
        return groups
