"""kohya-format LoRA files: names, ss_* metadata, sshs hashes, atomic writes."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kohyagen.atomic import replacing
from kohyagen.trainer.dataset_spec import parse_face_range

if TYPE_CHECKING:
    from types import SimpleNamespace

    import torch

# The commit of sd-scripts whose formats this trainer reproduces.
KOHYA_COMMIT = "48d368fa557731ad0488c07304dfeba8c07910eb"


def epoch_name(name: str, epoch: int, ext: str) -> str:
    # kohya's EPOCH_FILE_NAME (train_util.py:90-100): six digits
    return f"{name}-{epoch:06d}{ext}"


def step_name(name: str, step: int, ext: str) -> str:
    # kohya's STEP_FILE_NAME: eight digits after `step`
    return f"{name}-step{step:08d}{ext}"


def save_dtype(save_precision: str | None) -> torch.dtype | None:
    import torch

    # unset keeps the training dtype, as kohya does
    return {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(
        save_precision or ""
    )


def _sha256_after_header(data: bytes) -> str:
    # a safetensors file is an 8-byte header length, the JSON header, then the tensors;
    # kohya's precalculate_safetensors_hashes hashes only the tensors, so metadata edits
    # do not change the model hash
    header_len = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header_len :]).hexdigest()


def _legacy_hash(data: bytes) -> str:
    # A1111's old short hash: 64 KiB from the 1 MiB mark
    return hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]


def sshs_hashes(tensors: dict[str, Any], metadata: dict[str, str]) -> tuple[str, str]:
    """The additional-networks hashes: of the tensor bytes, and the legacy 64 KiB one."""
    from safetensors.torch import save

    # kohya hashes the file as it would be with only the ss_ keys (no modelspec)
    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    data = save(tensors, ss_only)
    return _sha256_after_header(data), _legacy_hash(data)


def write_lora(
    path: Path,
    state: dict[str, Any],
    metadata: dict[str, str] | None,
    *,
    save_precision: str | None,
) -> Path:
    """Write the LoRA atomically: .safetensors with metadata, .ckpt/.pt with torch.save."""
    import torch

    dtype = save_dtype(save_precision)
    tensors = {}
    for key, value in state.items():
        # a copy: casting to save_precision must not touch the weights still being trained
        value = value.detach().clone().to("cpu")
        if dtype is not None:
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    # temp file + rename: a reader (A1111, pick) never sees half a file
    with replacing(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            meta = dict(metadata or {})
            model_hash, legacy = sshs_hashes(tensors, meta)
            meta["sshs_model_hash"] = model_hash
            meta["sshs_legacy_hash"] = legacy
            save_file(tensors, str(tmp), meta)
        else:
            # kohya writes .ckpt/.pt with torch.save and no metadata (networks/lora.py:1255-1282)
            torch.save(tensors, tmp)
    return path


def file_hashes(path: Path) -> tuple[str, str]:
    """(legacy 8-hex hash of 64 KiB at 1 MiB, sha256 of the whole file), as kohya writes them."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(0x100000)
        legacy = hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
        f.seek(0)
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return legacy, sha.hexdigest()


def model_hashes(source: str, kind: str) -> dict[str, str]:
    """ss_<kind>_name and its hashes: "IsADirectory" for a folder, none for a hub id."""
    path = Path(str(source))
    if not path.exists():
        return {f"ss_{kind}_name": str(source)}
    if path.is_dir():
        # kohya's literal for a diffusers folder, which has no single file to hash
        legacy = new = "IsADirectory"
    else:
        legacy, new = file_hashes(path)
    return {
        f"ss_{kind}_name": path.name,
        f"ss_{kind}_hash": legacy,
        f"ss_new_{kind}_hash": new,
    }


def _s(value: Any) -> str:
    return str(value)


def base_model_version(*, sdxl: bool, v2: bool, v_param: bool) -> str:
    if sdxl:
        # the strings kohya writes to ss_base_model_version; A1111 reads them
        return "sdxl_base_v1-0"
    return ("sd_v2" if v2 else "sd_v1") + ("_v" if v_param else "")


def architecture(*, sdxl: bool, v2: bool, v_param: bool) -> str:
    if sdxl:
        return "stable-diffusion-xl-v1-base/lora"
    if v2:
        return "stable-diffusion-v2-768-v/lora" if v_param else "stable-diffusion-v2-512/lora"
    return "stable-diffusion-v1/lora"


def training_metadata(
    args: Any,
    *,
    sdxl: bool,
    v_param: bool,
    session_id: int,
    started_at: float,
    num_train_images: int,
    num_validation_images: int,
    num_reg_images: int,
    num_batches_per_epoch: int,
    num_epochs: int,
    max_train_steps: int,
    optimizer_name: str,
    dataset_info: dict[str, Any],
    resolution: tuple[int, int],
) -> dict[str, str]:
    """The ss_* keys written at the start of training (values are strings, as kohya's)."""
    a = args
    md: dict[str, Any] = {
        "ss_session_id": session_id,
        "ss_training_started_at": started_at,
        "ss_output_name": a.output_name,
        "ss_learning_rate": a.learning_rate,
        "ss_text_encoder_lr": a.text_encoder_lr,
        "ss_unet_lr": a.unet_lr,
        "ss_num_train_images": num_train_images,
        "ss_num_validation_images": num_validation_images,
        "ss_num_reg_images": num_reg_images,
        "ss_num_batches_per_epoch": num_batches_per_epoch,
        "ss_num_epochs": num_epochs,
        "ss_gradient_checkpointing": a.gradient_checkpointing,
        "ss_gradient_accumulation_steps": a.gradient_accumulation_steps,
        "ss_max_train_steps": max_train_steps,
        "ss_lr_warmup_steps": a.lr_warmup_steps,
        "ss_lr_scheduler": a.lr_scheduler,
        "ss_network_module": a.network_module,
        "ss_network_dim": a.network_dim,
        "ss_network_alpha": a.network_alpha,
        "ss_network_dropout": a.network_dropout,
        "ss_mixed_precision": a.mixed_precision,
        "ss_full_fp16": bool(a.full_fp16),
        "ss_v2": bool(a.v2),
        "ss_base_model_version": base_model_version(sdxl=sdxl, v2=bool(a.v2), v_param=v_param),
    }
    md.update(_option_keys(a, optimizer_name))
    md = _with_hashes_and_args(md, args, dataset_info)
    out = {k: _s(v) for k, v in md.items()}
    out.update(modelspec(args, sdxl=sdxl, v_param=v_param, resolution=resolution))
    return out


def _option_keys(a: Any, optimizer_name: str) -> dict[str, Any]:
    """The ss_* keys of the remaining training options (their order is the file's)."""
    return {
        "ss_clip_skip": a.clip_skip,
        "ss_max_token_length": a.max_token_length,
        "ss_cache_latents": bool(a.cache_latents),
        "ss_seed": a.seed,
        "ss_lowram": bool(a.lowram),
        "ss_noise_offset": a.noise_offset,
        "ss_multires_noise_iterations": a.multires_noise_iterations,
        "ss_multires_noise_discount": a.multires_noise_discount,
        "ss_adaptive_noise_scale": a.adaptive_noise_scale,
        "ss_zero_terminal_snr": bool(a.zero_terminal_snr),
        "ss_training_comment": a.training_comment,
        "ss_sd_scripts_commit_hash": KOHYA_COMMIT,
        "ss_optimizer": optimizer_name,
        "ss_max_grad_norm": a.max_grad_norm,
        "ss_caption_dropout_rate": a.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": a.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": a.caption_tag_dropout_rate,
        "ss_face_crop_aug_range": (
            str(parse_face_range(a.face_crop_aug_range)) if a.face_crop_aug_range else None
        ),
        "ss_prior_loss_weight": a.prior_loss_weight,
        "ss_min_snr_gamma": a.min_snr_gamma,
        "ss_scale_weight_norms": a.scale_weight_norms,
        "ss_ip_noise_gamma": a.ip_noise_gamma,
        "ss_debiased_estimation": bool(a.debiased_estimation_loss),
        "ss_noise_offset_random_strength": bool(a.noise_offset_random_strength),
        "ss_ip_noise_gamma_random_strength": bool(a.ip_noise_gamma_random_strength),
        "ss_loss_type": a.loss_type,
        "ss_huber_schedule": a.huber_schedule,
        "ss_huber_scale": a.huber_scale,
        "ss_huber_c": a.huber_c,
        "ss_fp8_base": False,
        "ss_fp8_base_unet": False,
        "ss_validation_seed": a.validation_seed,
        "ss_validation_split": a.validation_split,
        "ss_max_validation_steps": a.max_validation_steps,
        "ss_validate_every_n_epochs": a.validate_every_n_epochs,
        "ss_validate_every_n_steps": a.validate_every_n_steps,
        "ss_resize_interpolation": a.resize_interpolation,
    }


def _with_hashes_and_args(
    md: dict[str, Any], args: Any, dataset_info: dict[str, Any]
) -> dict[str, Any]:
    """Model hashes, dataset keys, network_args; only the network's keys with no_metadata."""
    a = args
    md.update(model_hashes(args.pretrained_model_name_or_path, "sd_model"))
    if args.vae:
        md.update(model_hashes(args.vae, "vae"))
    md.update(dataset_info)
    if a.network_args:
        md["ss_network_args"] = json.dumps(
            {k.strip(): v.strip() for k, _, v in (str(x).partition("=") for x in a.network_args)}
        )
    if a.no_metadata:
        keep = (
            "ss_v2",
            "ss_base_model_version",
            "ss_network_module",
            "ss_network_dim",
            "ss_network_alpha",
            "ss_network_args",
        )
        md = {k: md[k] for k in keep if k in md}
    return md


def modelspec(
    args: SimpleNamespace, *, sdxl: bool, v_param: bool, resolution: tuple[int, int]
) -> dict[str, str]:
    spec = {
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": architecture(sdxl=sdxl, v2=bool(args.v2), v_param=v_param),
        "modelspec.implementation": (
            "https://github.com/Stability-AI/generative-models" if sdxl else "diffusers"
        ),
        "modelspec.implementation_version": f"sd-scripts/{KOHYA_COMMIT}",
        "modelspec.title": args.metadata_title or args.output_name or "last",
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        # local time without a zone, as kohya's sai_model_spec writes it
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "modelspec.prediction_type": "v" if v_param else "epsilon",
    }
    for key in (
        "author",
        "description",
        "license",
        "tags",
        "trigger_phrase",
        "usage_hint",
        "merged_from",
        "preprocessor",
        "is_negative_embedding",
    ):
        value = getattr(args, f"metadata_{key}", None)
        if value:
            spec[f"modelspec.{key}"] = str(value)
    if getattr(args, "metadata_thumbnail", None):
        spec["modelspec.thumbnail"] = thumbnail_url(args.metadata_thumbnail)
    return spec


def thumbnail_url(value: str) -> str:
    """metadata_thumbnail: a data: URL as given, or an image file embedded as one (kohya)."""
    import base64
    import mimetypes

    if value.startswith("data:"):
        return value
    mime = mimetypes.guess_type(value)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(Path(value).read_bytes()).decode("ascii")
