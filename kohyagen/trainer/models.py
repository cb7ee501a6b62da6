"""Loading SD1.5 / SD2 / SDXL components from a diffusers folder, a single file or a hub id.

Unlike kohya, the U-Net is used as diffusers builds it, so any size works, and the
tokenizer comes from the model itself (tokenizer_cache_dir is still honoured when it
holds kohya's cached tokenizer folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kohyagen.errors import ConfigError, ModelNotFound, require

if TYPE_CHECKING:
    import torch


@dataclass
class Components:
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    sdxl: bool
    v_parameterization: bool
    scaling_factor: float


def _tokenizer_from_cache(cache_dir: str | None, repo: str) -> Any:
    if not cache_dir:
        return None
    folder = Path(cache_dir) / repo.replace("/", "_")
    if folder.is_dir():
        transformers = require("transformers")
        return transformers.CLIPTokenizer.from_pretrained(folder)
    return None


def _uncached_config_repo(exc: BaseException) -> str | None:
    """The hub repo whose configs diffusers needed for a single file but could not fetch."""
    import re

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = re.search(r"huggingface\.co/api/models/([\w.-]+/[\w.-]+)/", str(current))
        if found:
            return found.group(1)
        current = current.__cause__ or current.__context__
    return None


def _load_failure_hint(exc: BaseException, source: str, path: Path) -> str:
    """What to try when the base model does not load: the cache, the path, the hub."""
    import os

    config_repo = _uncached_config_repo(exc) if path.is_file() else None
    if config_repo is not None:
        hint = (
            f"a single file is read with the config and tokenizer files of {config_repo},"
            " which are not in the Hugging Face cache, and the hub cannot be reached:"
            f" fetch them once with `hf download {config_repo} --include '*.json'"
            " '*/*.json' '*.txt' '*/*.txt' '*/*.model'`"
        )
    elif path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        hint = "check the path; a single file must be an SD1/SD2/SDXL checkpoint"
    elif os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        hint = f"offline mode is on: fetch it once with `hf download {source}`"
    else:
        hint = "check the repo id and your network or HF_TOKEN"
    return hint


def load_components(args: Any, *, sdxl: bool) -> Components:
    diffusers = require("diffusers")
    require("transformers")
    source = str(args.pretrained_model_name_or_path)
    path = Path(source)
    cls = diffusers.StableDiffusionXLPipeline if sdxl else diffusers.StableDiffusionPipeline
    extra: dict[str, Any] = (
        {} if sdxl else {"safety_checker": None, "requires_safety_checker": False}
    )
    try:
        if path.is_file():
            pipe = cls.from_single_file(str(path), **extra)
        else:
            pipe = cls.from_pretrained(source, **extra)
    except Exception as exc:  # diffusers raises many kinds for a missing or foreign model
        raise ModelNotFound(
            f"cannot load the base model: {exc}",
            path=source,
            hint=_load_failure_hint(exc, source, path),
        ) from exc
    text_encoders = [pipe.text_encoder]
    tokenizers = [pipe.tokenizer]
    if sdxl:
        text_encoders.append(pipe.text_encoder_2)
        tokenizers.append(pipe.tokenizer_2)
    else:
        cached = _tokenizer_from_cache(args.tokenizer_cache_dir, "openai/clip-vit-large-patch14")
        if cached is not None and not args.v2:
            tokenizers = [cached]
    for tok in tokenizers:
        if tok.model_max_length > 1000:
            tok.model_max_length = 77  # a missing limit makes padding impossible
    vae = pipe.vae
    if args.vae:
        try:
            vae = (
                diffusers.AutoencoderKL.from_single_file(args.vae)
                if Path(args.vae).is_file()
                else diffusers.AutoencoderKL.from_pretrained(args.vae)
            )
        except Exception as exc:
            raise ModelNotFound(f"cannot load the VAE: {exc}", path=args.vae) from exc
    prediction = getattr(pipe.scheduler.config, "prediction_type", "epsilon")
    # kohya decides by the flag; a folder whose scheduler says v_prediction agrees with it.
    v_param = bool(args.v_parameterization) or (prediction == "v_prediction" and args.v2)
    scaling = getattr(vae.config, "scaling_factor", None) or (0.13025 if sdxl else 0.18215)
    return Components(
        unet=pipe.unet,
        vae=vae,
        text_encoders=text_encoders,
        tokenizers=tokenizers,
        sdxl=sdxl,
        v_parameterization=v_param,
        scaling_factor=float(scaling),
    )


def _encode_sd(te: Any, ids: torch.Tensor, clip_skip: int | None) -> torch.Tensor:
    if clip_skip and clip_skip > 1:
        out = te(ids, output_hidden_states=True)
        return getattr(te, "text_model", te).final_layer_norm(out.hidden_states[-clip_skip])
    return te(ids)[0]


def encode_prompts(
    components: Components,
    captions: list[str],
    *,
    clip_skip: int | None,
    device: torch.device | str,
    max_token_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Text conditioning for a batch: (encoder_hidden_states, pooled or None).

    max_token_length (SD1/SD2: 150 or 225) reads longer captions in windows of 75 tokens,
    each wrapped in the begin/end tokens and encoded alone; the result keeps the first
    begin token, every window's inner 75 and the final end token (kohya's long captions).
    """
    import torch

    if not components.sdxl:
        tok = components.tokenizers[0]
        te = components.text_encoders[0]
        window = tok.model_max_length - 2
        length = (max_token_length or window) + 2
        ids = tok(
            captions,
            padding="max_length",
            max_length=length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        if length == tok.model_max_length:
            return _encode_sd(te, ids, clip_skip), None
        first, last = ids[:, :1], ids[:, -1:]
        chunks = [
            torch.cat([first, ids[:, 1 + start : 1 + start + window], last], dim=1)
            for start in range(0, length - 2, window)
        ]
        hidden = _encode_sd(te, torch.cat(chunks, dim=0), clip_skip)
        parts = hidden.chunk(len(chunks), dim=0)
        joined = [parts[0][:, :1]] + [p[:, 1:-1] for p in parts] + [parts[-1][:, -1:]]
        return torch.cat(joined, dim=1), None
    states = []
    pooled = None
    for i, (tok, te) in enumerate(
        zip(components.tokenizers, components.text_encoders, strict=True)
    ):
        ids = tok(
            captions,
            padding="max_length",
            max_length=tok.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        out = te(ids, output_hidden_states=True)
        states.append(out.hidden_states[-2])
        if i == 1:
            pooled = out.text_embeds if hasattr(out, "text_embeds") else out[0]
    return torch.cat(states, dim=-1), pooled


def place_components(
    components: Components,
    *,
    weight_dtype: torch.dtype,
    device: torch.device | str,
    xformers: bool,
    gradient_checkpointing: bool,
) -> None:
    """Freeze the base models, cast them (VAE stays fp32) and move them to the device."""
    import torch

    for module in [components.unet, components.vae, *components.text_encoders]:
        module.requires_grad_(False)
        module.eval()
    for module in [components.unet, *components.text_encoders, components.vae]:
        dtype = torch.float32 if module is components.vae else weight_dtype
        # .to(dtype) on a model already in that dtype only prints a diffusers warning.
        if next(module.parameters()).dtype != dtype:
            module.to(dtype)
        module.to(device)
    if xformers:
        try:
            components.unet.enable_xformers_memory_efficient_attention()
        except Exception as exc:  # diffusers raises several kinds when xformers is absent
            raise ConfigError(
                f"xformers is not usable here: {exc}",
                hint="pip install xformers, or use sdpa = true",
            ) from exc
    if gradient_checkpointing:
        components.unet.enable_gradient_checkpointing()
        components.unet.train()  # diffusers checkpoints only in training mode
        for te in components.text_encoders:
            te.gradient_checkpointing_enable()
            te.train()  # CLIP has no dropout at these settings; train mode enables checkpointing


def cpu_only() -> bool:
    """No accelerator device (asked before accelerate's process state exists)."""
    import os

    import torch

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return True
    xpu = getattr(torch, "xpu", None)
    return not (
        torch.cuda.is_available()
        or torch.backends.mps.is_available()
        or (xpu is not None and xpu.is_available())
    )
