"""Tiny model files for the DiT families: real .safetensors headers with the tensor names
kohya's loaders look for (no weights worth the name), written by the tests."""

from __future__ import annotations

import json
import struct
from pathlib import Path

# role -> tensor names that make the file look like what it is
TENSORS = {
    "dit": ["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight",
            "guidance_in.in_layer.weight"],
    "schnell": ["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"],
    "clip_l": ["text_model.embeddings.token_embedding.weight"],
    "clip_g": ["text_model.embeddings.token_embedding.weight"],
    "t5xxl": ["encoder.block.0.layer.0.SelfAttention.q.weight"],
    "ae": ["decoder.conv_in.weight", "encoder.conv_in.weight"],
    "checkpoint": ["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight",
                   "model.diffusion_model.joint_blocks.0.x_block.attn.ln_q.weight"],
    "sd3_medium": ["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"],
    "other": ["layers.0.attention.qkv.weight"],
}  # fmt: skip


def write_safetensors(path: Path, names: list[str], dtype: str = "BF16") -> Path:
    """A valid .safetensors file: each tensor one element of `dtype`."""
    width = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1, "F8_E5M2": 1}[dtype]
    header: dict = {"__metadata__": {"format": "pt"}}
    for i, name in enumerate(names):
        header[name] = {"dtype": dtype, "shape": [1], "data_offsets": [i * width, (i + 1) * width]}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (width * len(names)))
    return path


def family_files(family: str, folder: Path) -> dict[str, str]:
    """role -> path of a tiny file for every model file the family needs."""
    from kohyagen.config import presets

    preset = presets.get_model(family)
    assert preset.family is not None
    out = {}
    for f in preset.family.files:
        names = TENSORS.get(f.role, TENSORS["other"])
        if family == "chroma" and f.role == "dit":
            names = TENSORS["schnell"]
        out[f.role] = str(write_safetensors(folder / family / f"{f.role}.safetensors", names))
    return out
