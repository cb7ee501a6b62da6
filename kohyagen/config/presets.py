"""Model and GPU presets (data in templates/presets/) and the training settings they imply.

The memory model is data too (models.toml, [<model>.memory] and [fit]), so that the
choice "fastest settings that fit" is explicit and testable: `memory_need` computes
the VRAM a configuration needs, and `training_settings` searches the configurations
from fastest to slowest and keeps the first that fits.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache
from itertools import product
from typing import Any

from kohyagen.config.families import Family, dit_need, family_from_data
from kohyagen.config.family import BUCKET_STEP
from kohyagen.errors import PresetError
from kohyagen.resources import template_path
from kohyagen.toml_compat import tomllib

ATTENTIONS = ("sdpa", "xformers")


@dataclass(frozen=True)
class MemoryModel:
    base_gb: float
    per_sample_gb: float
    per_sample_gc_gb: float
    adamw_extra_gb: float
    unet_only_saving_gb: float
    fp8_saving_gb: float


@dataclass(frozen=True)
class ModelPreset:
    name: str
    label: str
    script: str
    resolution: int
    min_side: int
    v2: bool
    v_parameterization: bool
    default_base_model: str
    learning_rate: float
    unet_lr: float
    text_encoder_lr: float
    network_dim: int
    network_alpha: float
    max_batch: int
    target_samples: int
    min_samples: int
    max_samples: int
    train_unet_only: bool
    sample_steps: int
    sample_cfg: float
    memory: MemoryModel | None
    family: Family | None = None  # the DiT families (families.toml); None for SD1/2/XL
    apps: str = "A1111/Forge, ComfyUI and diffusers (kohya's SD LoRA format)"
    sample_extra: str = ""  # more --sample_prompts options the family needs

    @property
    def is_dit(self) -> bool:
        return self.family is not None

    @property
    def network_module(self) -> str:
        return self.family.network_module if self.family else "networks.lora"

    @property
    def bucket_step(self) -> int:
        """kohya asserts bucket_reso_steps is a multiple of this (SDXL: 32)."""
        return BUCKET_STEP[self.name]

    @property
    def script_name(self) -> str:
        """The script without .py, as kohyagen.config.schema names it."""
        return self.script.removesuffix(".py")

    @property
    def is_sdxl(self) -> bool:
        return self.script_name == "sdxl_train_network"


@dataclass(frozen=True)
class GpuPreset:
    name: str
    label: str
    vram_gb: float
    bf16: bool
    fp8: bool
    price_per_hour: float
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class FitParams:
    usable_fraction: float
    batch_sizes: tuple[int, ...]
    step_overhead: float
    gc_slowdown: float
    adamw8bit_slowdown: float


@dataclass(frozen=True)
class Setting:
    value: Any
    reason: str


@cache
def _load(name: str) -> dict[str, Any]:
    path = template_path(f"presets/{name}.toml")
    with open(path, "rb") as fh:
        return tomllib.load(fh)


@cache
def fit_params() -> FitParams:
    raw = _load("models")["fit"]
    return FitParams(
        usable_fraction=float(raw["usable_fraction"]),
        batch_sizes=tuple(int(b) for b in raw["batch_sizes"]),
        step_overhead=float(raw["step_overhead"]),
        gc_slowdown=float(raw["gc_slowdown"]),
        adamw8bit_slowdown=float(raw["adamw8bit_slowdown"]),
    )


@cache
def _models() -> dict[str, ModelPreset]:
    out = {}
    for name, raw in _load("models").items():
        # [fit] holds the search's parameters, not a model
        if name == "fit":
            continue
        fields = {k: v for k, v in raw.items() if k != "memory"}
        out[name] = ModelPreset(name=name, memory=MemoryModel(**raw["memory"]), **fields)
    family_data = {"files", "options", "memory", "medium_memory", "network_module"}
    for name, raw in _load("families").items():
        fields = {k: v for k, v in raw.items() if k not in family_data}
        out[name] = ModelPreset(name=name, memory=None, family=family_from_data(raw), **fields)
    return out


@cache
def _gpus() -> dict[str, GpuPreset]:
    out = {}
    for name, raw in _load("gpus").items():
        fields = dict(raw)
        fields["aliases"] = tuple(fields.get("aliases", ()))
        out[name] = GpuPreset(name=name, **fields)
    return out


def list_models() -> list[ModelPreset]:
    return list(_models().values())


def list_gpus() -> list[GpuPreset]:
    return list(_gpus().values())


def _unknown(kind: str, name: str, valid: list[str]) -> PresetError:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return PresetError(f"unknown {kind} {name!r}", hint=f"{hint}valid: {', '.join(valid)}")


def get_model(name: str) -> ModelPreset:
    models = _models()
    # people write sd-1.5, SD15, sd1.5, FLUX.1-dev: all one preset
    key = name.strip().lower().replace("-", "").replace(".", "").replace("_", "")
    aliases = {
        "sd1": "sd15", "sdv15": "sd15", "sd21": "sd2", "sd20": "sd2", "xl": "sdxl",
        "flux1": "flux", "fluxdev": "flux", "flux1dev": "flux", "fluxschnell": "flux",
        "flux1schnell": "flux", "sd35": "sd3", "sd3medium": "sd3", "sd35medium": "sd3",
        "sd35large": "sd3", "lumina": "lumina2", "lumina20": "lumina2",
        "hunyuanimage": "hunyuan-image", "hunyuan": "hunyuan-image",
        "hunyuanimage21": "hunyuan-image",
    }  # fmt: skip
    key = aliases.get(key, key)
    if key not in models:
        raise _unknown("model", name, list(models))
    return models[key]


def get_gpu(name: str) -> GpuPreset:
    gpus = _gpus()
    # `RTX 4090`, `rtx_4090` and `rtx4090` name one card
    key = name.strip().lower().replace(" ", "").replace("_", "-")
    if key in gpus:
        return gpus[key]
    for gpu in gpus.values():
        if key in gpu.aliases:
            return gpu
    raise _unknown("GPU", name, list(gpus))


def match_gpu(label: str, vram_gb: float | None = None) -> GpuPreset:
    """The preset for a GPU as the driver names it (e.g. nvidia-smi's "NVIDIA GeForce RTX
    4090"); an unlisted card falls back to the largest generic size within its memory."""
    wanted = re.sub(r"[^a-z0-9]", "", label.lower())
    # presets whose name starts with a digit (24gb, 80gb) are generic sizes, not cards
    named = [g for g in _gpus().values() if not g.name[0].isdigit()]
    for gpu in named:
        if re.sub(r"[^a-z0-9]", "", gpu.label.lower()) == wanted:
            return gpu
    # "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3": model name plus memory.
    candidates = [
        g
        for g in named
        if re.sub(r"[^a-z0-9]", "", g.name.split("-")[0]) in wanted
        and (vram_gb is None or abs(g.vram_gb - vram_gb) <= max(2.0, 0.1 * g.vram_gb))
    ]
    if candidates:
        # the longest match is the most specific: a100-80gb over a100
        return max(candidates, key=lambda g: len(g.name))
    if vram_gb is None:
        raise PresetError(
            f"no GPU preset matches {label!r}", hint="pass --gpu NAME or a size such as 24gb"
        )
    # drivers report a little less than the marketed size (23.6 GB for a 24 GB card)
    generic = [g for g in _gpus().values() if g.name[0].isdigit() and g.vram_gb <= vram_gb + 0.5]
    if not generic:
        raise PresetError(
            f"{label} has {vram_gb:g} GB, less than the smallest preset (8 GB)",
            hint="LoRA training needs at least 8 GB of GPU memory",
        )
    return max(generic, key=lambda g: g.vram_gb)


# --- memory model -------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingPlan:
    """One candidate configuration and what it costs."""

    batch_size: int
    gradient_checkpointing: bool
    optimizer: str  # "AdamW" | "AdamW8bit"
    unet_only: bool
    fp8_base: bool
    need_gb: float
    budget_gb: float
    throughput: float  # relative images per second (batch 1, no checkpointing = 1.0)


def memory_need(
    model: ModelPreset,
    *,
    batch_size: int,
    gradient_checkpointing: bool,
    optimizer: str = "AdamW8bit",
    unet_only: bool | None = None,
    fp8_base: bool = False,
    blocks_to_swap: int = 0,
) -> float:
    """VRAM in GB that LoRA training of `model` needs with these settings."""
    if model.family is not None:
        return dit_need(
            model.family.memory, batch_size=batch_size,
            gradient_checkpointing=gradient_checkpointing, optimizer=optimizer, fp8=fp8_base,
            blocks_to_swap=blocks_to_swap,
        )  # fmt: skip
    mem = model.memory
    assert mem is not None  # every U-Net preset has one (models.toml)
    unet_only = model.train_unet_only if unet_only is None else unet_only
    # A linear model: weights and optimizer states are fixed, activations grow with the
    # batch; checkpointing trades their memory for recomputing them in the backward pass.
    per_sample = mem.per_sample_gc_gb if gradient_checkpointing else mem.per_sample_gb
    need = mem.base_gb + batch_size * per_sample
    # fp32 AdamW keeps two full-precision states per LoRA weight; 8-bit keeps them in bytes
    if optimizer == "AdamW":
        need += mem.adamw_extra_gb
    if unet_only:
        need -= mem.unet_only_saving_gb
    if fp8_base:
        need -= mem.fp8_saving_gb
    return round(need, 2)


def relative_throughput(batch_size: int, gradient_checkpointing: bool, optimizer: str) -> float:
    fit = fit_params()
    # part of a step's time does not grow with the batch (launches, optimizer step), so
    # bigger batches give more images per second until memory runs out
    step_time = fit.step_overhead + batch_size * (1.0 - fit.step_overhead)
    if gradient_checkpointing:
        step_time *= fit.gc_slowdown
    if optimizer == "AdamW8bit":
        step_time *= fit.adamw8bit_slowdown
    return batch_size / step_time


def plan_training(model: ModelPreset, gpu: GpuPreset) -> TrainingPlan:
    """The fastest configuration that fits, or PresetError when none does.

    Stages degrade what is trained only when memory forces it: first the preset's
    own choice of trained parts, then U-Net only, then (on fp8-capable cards) fp8
    U-Net weights. Within a stage the highest relative throughput wins.
    """
    fit = fit_params()
    # leave room for the CUDA context, allocator fragmentation and the odd large bucket
    budget = round(gpu.vram_gb * fit.usable_fraction, 2)
    stages = [(model.train_unet_only, False)]
    if not model.train_unet_only:
        stages.append((True, False))
    # fp8 U-Net weights cost quality, so they come last and only where the card has fp8
    if gpu.fp8:
        stages.append((True, True))
    batches = [b for b in fit.batch_sizes if b <= model.max_batch]
    for unet_only, fp8 in stages:
        best: TrainingPlan | None = None
        # every combination is tried: the fastest that fits is not always the largest batch
        for batch, gc, opt in product(batches, (False, True), ("AdamW", "AdamW8bit")):
            need = memory_need(
                model,
                batch_size=batch,
                gradient_checkpointing=gc,
                optimizer=opt,
                unet_only=unet_only,
                fp8_base=fp8,
            )
            if need > budget:
                continue
            plan = TrainingPlan(
                batch, gc, opt, unet_only, fp8, need, budget, relative_throughput(batch, gc, opt)
            )
            if best is None or plan.throughput > best.throughput:
                best = plan
        if best is not None:
            return best
    smallest = memory_need(
        model,
        batch_size=1,
        gradient_checkpointing=True,
        optimizer="AdamW8bit",
        unet_only=True,
        fp8_base=gpu.fp8,
    )
    raise PresetError(
        f"{model.label} LoRA training does not fit on {gpu.name} ({gpu.vram_gb:g} GB): "
        f"even batch 1 with gradient checkpointing, AdamW8bit and U-Net only needs about "
        f"{smallest:g} GB of the {budget:g} GB usable",
        hint="choose a GPU with more memory, or --model sd15",
    )


def training_settings(
    model: ModelPreset | str, gpu: GpuPreset | str, *, attention: str = "sdpa"
) -> dict[str, Setting]:
    """kohya options for model x GPU, each with the reason it was chosen."""
    model = get_model(model) if isinstance(model, str) else model
    gpu = get_gpu(gpu) if isinstance(gpu, str) else gpu
    if attention not in ATTENTIONS:
        raise PresetError(f"unknown attention {attention!r}", hint="use sdpa or xformers")
    plan = plan_training(model, gpu)
    s: dict[str, Setting] = _fit_settings(model, gpu, plan)
    # kohya's fp16 path needs a GradScaler and can overflow; bf16 has fp32's range
    precision = "bf16" if gpu.bf16 else "fp16"
    s["mixed_precision"] = Setting(
        precision,
        f"{gpu.name} supports bf16: same speed as fp16 without its overflow risk"
        if gpu.bf16
        else f"{gpu.name} has no hardware bf16, so fp16",
    )
    s["save_precision"] = Setting("fp16", "fp16 LoRA files load everywhere (A1111, ComfyUI)")
    s[attention] = Setting(
        True,
        "PyTorch scaled-dot-product attention: fast and memory-efficient, no extra package"
        if attention == "sdpa"
        else "xformers requested (needs the xformers package installed next to kohya)",
    )
    s["cache_latents"] = Setting(
        True, "encode each image once with the VAE instead of every step (faster, less memory)"
    )
    s.update(_text_encoder_settings(model, plan))
    s["fp8_base"] = Setting(
        plan.fp8_base,
        f"U-Net weights stored in fp8 ({gpu.name} supports fp8): the only way this fits"
        if plan.fp8_base
        else "not needed",
    )
    return s


def _fit_settings(model: ModelPreset, gpu: GpuPreset, plan: TrainingPlan) -> dict[str, Setting]:
    """Batch size, gradient checkpointing and optimizer: what the memory plan chose."""
    mem = f"about {plan.need_gb:g} GB of {gpu.vram_gb:g} GB"
    s: dict[str, Setting] = {}
    s["train_batch_size"] = Setting(
        plan.batch_size,
        f"largest fast batch that fits {gpu.name} ({mem}, model cap {model.max_batch})",
    )
    s["gradient_checkpointing"] = Setting(
        plan.gradient_checkpointing,
        "needed to fit this batch in memory (about 30% slower per step)"
        if plan.gradient_checkpointing
        else "not needed: activations fit, and recomputing them would cost about 30% speed",
    )
    s["optimizer_type"] = Setting(
        plan.optimizer,
        "torch AdamW: LoRA optimizer states are small, so 8-bit saves little and the fused "
        "optimizer is faster"
        if plan.optimizer == "AdamW"
        else "bitsandbytes AdamW8bit keeps optimizer states in 8 bit, which this memory needs",
    )
    return s


def _text_encoder_settings(model: ModelPreset, plan: TrainingPlan) -> dict[str, Setting]:
    """Whether the text encoders train, and (SDXL) whether their outputs are cached."""
    s: dict[str, Setting] = {}
    s["network_train_unet_only"] = Setting(
        plan.unet_only,
        (
            "the preset trains the U-Net only"
            if model.train_unet_only
            else "U-Net only: training the text encoder too does not fit in memory"
        )
        if plan.unet_only
        else "text encoder and U-Net are both trained (fits in memory)",
    )
    if model.is_sdxl:
        # SDXL only: sdxl_train_network.py supports the cache and asserts the text encoders
        # are not trained when it is on
        s["cache_text_encoder_outputs"] = Setting(
            plan.unet_only,
            "text encoders are not trained, so their outputs are computed once and they "
            "leave the GPU"
            if plan.unet_only
            else "off: text encoders are trained, so their outputs change",
        )
    return s
