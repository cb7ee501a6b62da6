"""LoRA on the modules kohya's networks.lora targets, saved in kohya's key format.

Targets: every Linear and 1x1 Conv2d inside the U-Net's Transformer2DModel blocks,
and every Linear in the text encoders' attention and MLP blocks. Each wrapped
module computes  org(x) + up(down(x)) * multiplier * alpha / rank,  with down
initialised kaiming-uniform and up at zero, so training starts from the base model.
Keys are `<prefix>_<module path with . -> _>.{lora_down.weight, lora_up.weight, alpha}`;
SDXL U-Net paths are renamed to the SGM layout (input_blocks / middle_block /
output_blocks) that kohya and A1111/ComfyUI use.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kohyagen.errors import ConfigError

UNET_TARGETS = ("Transformer2DModel",)
UNET_CONV_TARGETS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TE_TARGETS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")


class LoRAModule(nn.Module):
    def __init__(self, lora_name: str, org: nn.Module, rank: int, alpha: float | int | None):
        super().__init__()
        self.lora_name = lora_name
        if isinstance(org, nn.Conv2d):
            # A 3x3 conv (conv_dim) keeps its kernel, stride and padding in the down half.
            self.lora_down = nn.Conv2d(
                org.in_channels,
                rank,
                org.kernel_size,
                org.stride,
                org.padding,
                bias=False,
            )
            self.lora_up = nn.Conv2d(rank, org.out_channels, 1, bias=False)
        else:
            self.lora_down = nn.Linear(org.in_features, rank, bias=False)
            self.lora_up = nn.Linear(rank, org.out_features, bias=False)
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
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self._org = [org]  # a list, so the base module is not part of this state dict
        self._org_forward = None

    def apply_to(self) -> None:
        org = self._org[0]
        self._org_forward = org.forward
        org.forward = self.forward

    def restore(self) -> None:
        if self._org_forward is not None:
            self._org[0].forward = self._org_forward
            self._org_forward = None

    def forward(self, x, *args, **kwargs):
        base = self._org_forward(x, *args, **kwargs)
        if self.multiplier == 0:
            return base
        if self.module_dropout and self.training and torch.rand(1) < self.module_dropout:
            return base
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


_SGM_RESNET_PARTS = {
    "conv1": "in_layers.2",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def _sgm_resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return _SGM_RESNET_PARTS.get(head, head) + (f".{tail}" if tail else "")


def sgm_unet_path(
    path: str, layers_per_block: int, up_with_attention: frozenset[int] = frozenset()
) -> str:
    """diffusers U-Net module path -> kohya's SGM-layout name for SDXL.

    up_with_attention: up-block indices that have attentions (their upsampler sits after
    the attention, at sub-index 2; otherwise at 1).
    """
    per = layers_per_block + 1
    rules = (
        (
            r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)",
            lambda i, j, r: f"input_blocks.{1 + i * per + j}.1.{r}",
        ),
        (
            r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
            lambda i, j, r: f"input_blocks.{1 + i * per + j}.0.{_sgm_resnet(r)}",
        ),
        (
            r"down_blocks\.(\d+)\.downsamplers\.(\d+)\.conv(.*)",
            lambda i, j, r: f"input_blocks.{(i + 1) * per}.0.op{r}",
        ),
        (r"mid_block\.attentions\.(\d+)\.(.*)", lambda j, r: f"middle_block.{1 + 2 * j}.{r}"),
        (r"mid_block\.resnets\.(\d+)\.(.*)", lambda j, r: f"middle_block.{2 * j}.{_sgm_resnet(r)}"),
        (
            r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)",
            lambda i, j, r: f"output_blocks.{i * per + j}.1.{r}",
        ),
        (
            r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
            lambda i, j, r: f"output_blocks.{i * per + j}.0.{_sgm_resnet(r)}",
        ),
        (
            r"up_blocks\.(\d+)\.upsamplers\.(\d+)\.conv(.*)",
            lambda i, j, r: (
                f"output_blocks.{i * per + per - 1}.{2 if i in up_with_attention else 1}.conv{r}"
            ),
        ),
    )
    for pattern, build in rules:
        m = re.fullmatch(pattern, path)
        if m:
            groups = [int(g) if g.isdigit() else g for g in m.groups()]
            return build(*groups)
    return path


def _targets(root: nn.Module, target_classes: tuple[str, ...], *, conv: bool = False):
    """(path, module) for Linear and 1x1 Conv2d (and, with conv, larger Conv2d) inside
    modules of the target classes."""
    for name, module in root.named_modules():
        if module.__class__.__name__ not in target_classes:
            continue
        for child_name, child in module.named_modules():
            if not child_name:
                continue
            is_linear = isinstance(child, nn.Linear)
            is_conv = isinstance(child, nn.Conv2d)
            if is_linear or (is_conv and (conv or child.kernel_size == (1, 1))):
                yield f"{name}.{child_name}" if name else child_name, child


@dataclass(frozen=True)
class MaxNormResult:
    """What scale_weight_norms did this step, for the bar and TensorBoard (kohya's names)."""

    keys_scaled: int
    mean_norm: float
    max_norm: float

    def postfix(self) -> dict[str, float]:
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


ModuleFactory = Callable[[str, nn.Module, int, Any], "LoRAModule | None"]


def _text_encoder_modules(
    text_encoders: list[nn.Module], module: ModuleFactory, rank: int, alpha: Any, *, sdxl: bool
) -> list[LoRAModule | None]:
    """One LoRA module per targeted text encoder layer, under kohya's lora_te names."""
    te_mods: list[LoRAModule | None] = []
    for idx, te in enumerate(text_encoders):
        prefix = f"lora_te{idx + 1}" if sdxl else "lora_te"
        seen: set[str] = set()
        for path, org in _targets(te, TE_TARGETS):
            # transformers 5 dropped the text_model wrapper; kohya's names keep it.
            if not path.startswith("text_model."):
                path = "text_model." + path
            name = f"{prefix}_{path.replace('.', '_')}"
            if name not in seen:
                seen.add(name)
                te_mods.append(module(name, org, rank, alpha))
    return te_mods


def _unet_modules(
    unet: nn.Module,
    module: ModuleFactory,
    rank: int,
    alpha: Any,
    *,
    conv: tuple[int | None, float | None] | None,
    sdxl: bool,
) -> list[LoRAModule | None]:
    """One LoRA module per targeted U-Net layer (and conv layer), under kohya's names."""
    layers = getattr(unet.config, "layers_per_block", 2)
    if isinstance(layers, (list, tuple)):
        layers = layers[0]
    up_attn = frozenset(
        i for i, block in enumerate(getattr(unet, "up_blocks", [])) if hasattr(block, "attentions")
    )

    def kohya_name(path: str) -> str:
        kohya_path = sgm_unet_path(path, layers, up_attn) if sdxl else path
        return f"lora_unet_{kohya_path.replace('.', '_')}"

    unet_mods = [
        module(kohya_name(path), org, rank, alpha) for path, org in _targets(unet, UNET_TARGETS)
    ]
    if conv is not None:
        conv_rank, conv_alpha = conv
        for path, org in _targets(unet, UNET_CONV_TARGETS, conv=True):
            is_3x3 = isinstance(org, nn.Conv2d) and org.kernel_size != (1, 1)
            r, a = (conv_rank or rank, conv_alpha) if is_3x3 else (rank, alpha)
            unet_mods.append(module(kohya_name(path), org, r, a))
    return unet_mods


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
    ):
        """dims (dim_from_weights): rank and alpha per module name, as read from a LoRA
        file; only those modules are made, conv layers included."""
        super().__init__()
        self.rank = rank

        def module(name: str, org: nn.Module, r: int, a) -> LoRAModule | None:
            if dims is None:
                return LoRAModule(name, org, r, a)
            if name not in dims:
                return None
            return LoRAModule(name, org, *dims[name])

        te_mods: list[LoRAModule | None] = []
        if train_text_encoder:
            te_mods = _text_encoder_modules(text_encoders, module, rank, alpha, sdxl=sdxl)
        unet_mods: list[LoRAModule | None] = []
        if train_unet:
            # kohya's conv_dim: ResNet and resampler convs too
            with_conv = bool(conv_rank) or dims is not None
            unet_mods = _unet_modules(
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
            plain, plus = [], []
            for mod in loras:
                for name, param in mod.named_parameters():
                    (plus if ratio is not None and "lora_up" in name else plain).append(param)
            for params, group_lr, suffix in ((plain, lr, ""), (plus, lr * (ratio or 0), " plus")):
                if params and group_lr:
                    groups.append({"params": params, "lr": group_lr, "desc": desc + suffix})
        return groups


def read_lora_file(path) -> dict[str, torch.Tensor]:
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


def dims_from_weights(path) -> dict[str, tuple[int, float | int]]:
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
                alpha.item() if alpha is not None else value.shape[0],
            )
    if not dims:
        raise ConfigError(
            "network_weights has no lora_down weights", path=path, hint="use a kohya LoRA file"
        )
    return dims


def load_network_weights(network: LoRANetwork, path) -> int:
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
