"""What a DiT family adds to a rendered training config: its model files, the options
kohya's docs recommend for it, and its memory levers (blocks_to_swap, fp8, text
encoders while caching)."""

from __future__ import annotations

from pathlib import Path

from kohyagen.config.families import DitMemory
from kohyagen.config.model_files import (
    flux_variant,
    read_safetensors_header,
    sd3_variant,
)
from kohyagen.config.presets import ModelPreset, Setting
from kohyagen.config.render_values import Choices
from kohyagen.errors import ConfigError

# Template order of the family keys (templates/training_config.toml.j2 lists them).
FILE_REASONS = {
    "pretrained_model_name_or_path": "the DiT weights (a .safetensors file; checked before launch)",
    "clip_l": "CLIP-L text encoder (HF CLIPTextModel keys)",
    "clip_g": "CLIP-G text encoder",
    "t5xxl": "T5-XXL text encoder",
    "ae": "the autoencoder that turns images into latents",
    "gemma2": "Gemma-2 2B text encoder",
    "text_encoder": "Qwen2.5-VL text encoder",
    "byt5": "ByT5 glyph text encoder",
    "vae": "the VAE that turns images into latents",
    "qwen3": "Qwen3-0.6B text encoder",
}


def model_variant(model: ModelPreset, files: dict[str, str], notes: list[str]) -> DitMemory | None:
    """Read the variant from the weights (FLUX dev/schnell, SD3 medium/3.5 large/3.5 medium)
    as kohya does; for SD3's mediums, the memory model to plan with."""
    ckpt = files.get("pretrained_model_name_or_path")
    if model.family is None or ckpt is None or not Path(ckpt).is_file():
        return None
    try:
        header = read_safetensors_header(Path(ckpt))
    except ConfigError:
        return None  # reported by the file check
    if model.name == "flux":
        variant = flux_variant(header)
        notes.append(f"FLUX.1 {variant} (read from the DiT's keys, as kohya does)")
        if variant == "schnell":
            notes.append("schnell: kohya uses 256 T5 tokens and ignores guidance_scale")
    if model.name == "sd3":
        variant = sd3_variant(header)
        notes.append(f"SD3 variant: {variant} (read from the checkpoint, as kohya does)")
        if variant != "3.5-large":
            return model.family.medium_memory
    return None


def family_choices(
    c: Choices, model: ModelPreset, settings: dict[str, Setting], files: dict[str, str]
) -> None:
    """Add the family's files, recommended options and memory levers to c (in place)."""
    assert model.family is not None
    for option, path in files.items():
        if option == "pretrained_model_name_or_path":
            c.put(option, path, FILE_REASONS[option])
        else:
            c.put(option, path, FILE_REASONS.get(option, "a model file the family needs"))
    for key, value, reason in model.family.options:
        c.put(key, value, reason)
    for key in (
        "blocks_to_swap",
        "fp8_vl",
        "text_encoder_cpu",
        "cache_text_encoder_outputs_to_disk",
    ):
        if key in settings and settings[key].value:
            c.take(key, settings[key])
