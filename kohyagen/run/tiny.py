"""Tiny random Stable Diffusion pipelines, built locally for tests and demos.

make_tiny_pipeline writes a diffusers folder (SD1.5-, SD2- or SDXL-shaped) whose
parts are a few hundred kilobytes: a small U-Net with cross-attention blocks,
small CLIP text encoder(s), a small VAE that still downsamples 8x, a DDPM
scheduler config and a CLIP BPE tokenizer whose files are written here, so that
nothing is ever downloaded. Heavy imports happen inside the function.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from kohyagen.atomic import make_staging_dir
from kohyagen.errors import UsageError, require
from kohyagen.quiet import quiet_third_party

KINDS = ("sd15", "sd2", "sdxl")

# Small enough to load in about a second, big enough to keep every block type
# (cross-attention down/mid/up) that real checkpoints have.
_UNET_CHANNELS = (16, 32)
_TEXT_WIDTH = 32
_MAX_LENGTH = 77
_MERGES = (
    ("t", "h"),
    ("th", "e</w>"),
    ("a", "n"),
    ("an", "d</w>"),
    ("s", "k"),
    ("sk", "s</w>"),
    ("o", "n</w>"),
    ("i", "n"),
    ("r", "e"),
    ("e", "r</w>"),
)


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the byte values 0..255.

    Printable Latin-1 bytes stand for themselves; the rest are shifted above 255
    in order, so that every byte has a visible, whitespace-free symbol.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\xa1"), ord("\xac") + 1),
        *range(ord("\xae"), ord("\xff") + 1),
    ]
    table: dict[int, str] = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return [table[b] for b in range(256)]


def write_clip_tokenizer(folder: Path, *, pad_token: str = "<|endoftext|>") -> Path:
    """Write a small CLIP tokenizer (vocab.json, merges.txt, configs) into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = byte_symbols()
    tokens: list[str] = [*symbols, *(s + "</w>" for s in symbols)]
    for left, right in _MERGES:
        tokens.append(left + right)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES)
    (folder / "merges.txt").write_text(merges, encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": _MAX_LENGTH,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    return folder


def vocab_size() -> int:
    return 512 + len(_MERGES) + 2


def _text_config(*, projection: bool, seed_width: int = _TEXT_WIDTH) -> Any:
    transformers = require("transformers")
    return transformers.CLIPTextConfig(
        vocab_size=vocab_size(),
        hidden_size=seed_width,
        intermediate_size=seed_width * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=_MAX_LENGTH,
        projection_dim=seed_width if projection else 512,
        bos_token_id=vocab_size() - 2,
        eos_token_id=vocab_size() - 1,
        pad_token_id=vocab_size() - 1,
        hidden_act="quick_gelu",
    )


def _scheduler(kind: str) -> Any:
    diffusers = require("diffusers")
    return diffusers.DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
        prediction_type="v_prediction" if kind == "sd2" else "epsilon",
    )


def _vae() -> Any:
    diffusers = require("diffusers")
    # Four blocks: three downsamplings, the 8x that pipelines and kohya assume.
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def _unet(kind: str) -> Any:
    diffusers = require("diffusers")
    common = {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": _UNET_CHANNELS,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "norm_num_groups": 8,
        "attention_head_dim": 8,
    }
    if kind == "sdxl":
        return diffusers.UNet2DConditionModel(
            **common,
            cross_attention_dim=_TEXT_WIDTH * 2,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=_TEXT_WIDTH + 6 * 8,
        )
    return diffusers.UNet2DConditionModel(
        **common,
        cross_attention_dim=_TEXT_WIDTH,
        use_linear_projection=kind == "sd2",
    )


def _build_pipeline(kind: str, tmp: Path) -> Any:
    """The random pipeline's parts, built in a fixed order so a seed gives the same weights."""
    diffusers = require("diffusers")
    transformers = require("transformers")
    unet = _unet(kind)
    vae = _vae()
    text_encoder = transformers.CLIPTextModel(_text_config(projection=False))
    write_clip_tokenizer(tmp / "_tok")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(tmp / "_tok")
    scheduler = _scheduler(kind)
    if kind == "sdxl":
        text_encoder_2 = transformers.CLIPTextModelWithProjection(_text_config(projection=True))
        write_clip_tokenizer(tmp / "_tok2", pad_token="!")
        tokenizer_2 = transformers.CLIPTokenizer.from_pretrained(tmp / "_tok2")
        pipe = diffusers.StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
        )
    else:
        pipe = diffusers.StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    return pipe


def make_tiny_pipeline(out_dir: str | Path, kind: str = "sd15", seed: int = 0) -> Path:
    """Write a tiny random diffusers pipeline folder of the given kind; return its path.

    The folder is written atomically (built beside out_dir, then renamed); an
    existing non-empty out_dir is refused rather than overwritten.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown tiny pipeline kind {kind!r}", hint=f"use one of {KINDS}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise UsageError(
            "folder exists and is not empty", path=out, hint="choose a new folder or delete it"
        )
    quiet_third_party()
    torch = require("torch")
    require("diffusers")  # both checked before anything is written
    require("transformers")

    tmp = make_staging_dir(out.parent)  # umask's mode, cleaned after a kill -9
    try:
        torch.manual_seed(seed)
        pipe = _build_pipeline(kind, tmp)
        pipe.save_pretrained(tmp, safe_serialization=True)
        # Replace whatever save_pretrained wrote for the tokenizers with our own
        # slow-tokenizer files, which both tokenizer classes load.
        for sub, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
            if (tmp / sub).is_dir():
                shutil.rmtree(tmp / sub)
                write_clip_tokenizer(tmp / sub, pad_token=pad)
        shutil.rmtree(tmp / "_tok")
        shutil.rmtree(tmp / "_tok2", ignore_errors=True)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
