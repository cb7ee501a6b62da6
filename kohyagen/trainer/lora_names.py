"""Which layers get a LoRA module, and the names kohya's networks.lora gives them.

Text encoder modules are named lora_te[N]_<path>, U-Net modules lora_unet_<path>, with
dots turned into underscores; SDXL U-Net paths are first renamed from diffusers' layout
to the SGM one (input_blocks / middle_block / output_blocks) that kohya, A1111 and
ComfyUI use, so the files load everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from torch import nn

# kohya's default targets (networks/lora.py): Linear and 1x1 Conv2d inside these classes
UNET_TARGETS = ("Transformer2DModel",)
# added by network_args conv_dim: their 3x3 convs get conv_dim (lora.py:1036-1043)
UNET_CONV_TARGETS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
# one class per attention implementation transformers may pick for CLIP
TE_TARGETS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")


# diffusers ResnetBlock2D layer names -> their place in the SGM ResBlock (Sequential indices)
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
    # each SGM input/output block index counts the resnets plus the resampler
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
    # a path no rule knows keeps its diffusers name rather than failing the whole network
    for pattern, build in rules:
        m = re.fullmatch(pattern, path)
        if m:
            groups = [int(g) if g.isdigit() else g for g in m.groups()]
            return build(*groups)
    return path


def targets(
    root: nn.Module, target_classes: tuple[str, ...], *, conv: bool = False
) -> Iterator[tuple[str, nn.Module]]:
    """(path, module) for Linear and 1x1 Conv2d (and, with conv, larger Conv2d) inside
    modules of the target classes."""
    for name, module in root.named_modules():
        # matched by class name, as kohya does, so that any diffusers version's class qualifies
        if module.__class__.__name__ not in target_classes:
            continue
        for child_name, child in module.named_modules():
            # the target module itself is a container, not a layer to wrap
            if not child_name:
                continue
            is_linear = isinstance(child, nn.Linear)
            is_conv = isinstance(child, nn.Conv2d)
            if is_linear or (is_conv and (conv or child.kernel_size == (1, 1))):
                yield f"{name}.{child_name}" if name else child_name, child


# generic in the module class, so the network keeps its LoRAModule type through these builders
M = TypeVar("M", bound=nn.Module)
ModuleFactory = Callable[[str, nn.Module, int, Any], "M | None"]


def text_encoder_modules(
    text_encoders: list[nn.Module], module: ModuleFactory[M], rank: int, alpha: Any, *, sdxl: bool
) -> list[M | None]:
    """One LoRA module per targeted text encoder layer, under kohya's lora_te names."""
    te_mods: list[M | None] = []
    for idx, te in enumerate(text_encoders):
        # SD1/2 have one text encoder, lora_te; SDXL's two are lora_te1, lora_te2 (lora.py:867-875)
        prefix = f"lora_te{idx + 1}" if sdxl else "lora_te"
        seen: set[str] = set()
        for path, org in targets(te, TE_TARGETS):
            # transformers 5 dropped the text_model wrapper; kohya's names keep it.
            if not path.startswith("text_model."):
                path = "text_model." + path
            name = f"{prefix}_{path.replace('.', '_')}"
            # a layer inside two nested targets would otherwise get two modules of one name
            if name not in seen:
                seen.add(name)
                te_mods.append(module(name, org, rank, alpha))
    return te_mods


def unet_modules(
    unet: nn.Module,
    module: ModuleFactory[M],
    rank: int,
    alpha: Any,
    *,
    conv: tuple[int | None, float | None] | None,
    sdxl: bool,
) -> list[M | None]:
    """One LoRA module per targeted U-Net layer (and conv layer), under kohya's names."""
    layers = getattr(unet.config, "layers_per_block", 2)
    # diffusers allows one count per block; the SDXL and SD U-Nets use one value throughout
    if isinstance(layers, (list, tuple)):
        layers = layers[0]
    up_attn = frozenset(
        i for i, block in enumerate(getattr(unet, "up_blocks", [])) if hasattr(block, "attentions")
    )

    def kohya_name(path: str) -> str:
        kohya_path = sgm_unet_path(path, layers, up_attn) if sdxl else path
        return f"lora_unet_{kohya_path.replace('.', '_')}"

    unet_mods = [
        module(kohya_name(path), org, rank, alpha) for path, org in targets(unet, UNET_TARGETS)
    ]
    if conv is not None:
        conv_rank, conv_alpha = conv
        for path, org in targets(unet, UNET_CONV_TARGETS, conv=True):
            is_3x3 = isinstance(org, nn.Conv2d) and org.kernel_size != (1, 1)
            # time_emb_proj and conv_shortcut are Linear / 1x1 and keep the normal rank
            r, a = (conv_rank or rank, conv_alpha) if is_3x3 else (rank, alpha)
            unet_mods.append(module(kohya_name(path), org, r, a))
    return unet_mods
