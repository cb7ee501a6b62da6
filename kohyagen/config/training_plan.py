"""The fastest training settings that fit: the memory model, the search and its options.

`memory_need` computes the VRAM a configuration needs from the presets' memory data
(models.toml, [<model>.memory] and [fit]); `plan_training` searches the configurations
from fastest to slowest and keeps the first that fits; `training_settings` turns that
plan into kohya options, each with the reason it was chosen. Separate from presets.py,
which only loads and looks up the preset data: this is the decision made from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from kohyagen.config.families import dit_need
from kohyagen.config.presets import (
    ATTENTIONS,
    GpuPreset,
    ModelPreset,
    Setting,
    fit_params,
    get_gpu,
    get_model,
)
from kohyagen.errors import PresetError

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
