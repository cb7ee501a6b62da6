"""kohya options for any model x GPU: SD1/2/XL through kohyagen.config.training_plan, the DiT
families through their own levers (fp8, blocks_to_swap, batch, checkpointing, optimizer,
text-encoder output caching), each value with the memory it saves.

Where nothing fits, the error names the smallest GPU preset that does.
"""

from __future__ import annotations

from kohyagen.config.families import (
    DitMemory,
    DitPlan,
    no_fit_error,
    plan_dit,
    smallest_need,
)
from kohyagen.config.presets import (
    ATTENTIONS,
    GpuPreset,
    ModelPreset,
    Setting,
    fit_params,
    get_gpu,
    get_model,
    list_gpus,
)
from kohyagen.config.training_plan import plan_training, relative_throughput, training_settings
from kohyagen.errors import PresetError


def dit_plan(model: ModelPreset, gpu: GpuPreset, memory: DitMemory | None = None) -> DitPlan:
    """The fastest fitting DiT setting, or PresetError naming the smallest preset that fits."""
    assert model.family is not None
    mem = memory or model.family.memory
    fit = fit_params()
    # not the whole card: CUDA's context and the allocator's fragmentation take the rest
    # (usable_fraction in templates/presets/models.toml)
    budget = round(gpu.vram_gb * fit.usable_fraction, 2)
    batches = [b for b in fit.batch_sizes if b <= model.max_batch]
    plan = plan_dit(mem, budget, batches, relative_throughput)
    if plan is None:
        raise no_fit_error(
            model.label, gpu.name, gpu.vram_gb, budget, smallest_need(mem),
            smallest_fitting_gpu(model, memory=mem),
        )  # fmt: skip
    return plan


def smallest_fitting_gpu(model: ModelPreset, memory: DitMemory | None = None) -> str:
    """The name of the GPU preset with the least memory this model trains on ("" if none)."""
    # by memory, then price: among cards of one size the hint names the cheapest
    for gpu in sorted(list_gpus(), key=lambda g: (g.vram_gb, g.price_per_hour)):
        try:
            if model.family is not None:
                mem = memory or model.family.memory
                fit = fit_params()
                budget = round(gpu.vram_gb * fit.usable_fraction, 2)
                # batch 1 with every lever pulled: the least this family can train with
                if plan_dit(mem, budget, [1], relative_throughput) is not None:
                    return gpu.name
            else:
                plan_training(model, gpu)
                return gpu.name
        except PresetError:
            continue
    return ""


def settings_for(
    model: ModelPreset | str,
    gpu: GpuPreset | str,
    *,
    attention: str = "sdpa",
    memory: DitMemory | None = None,
) -> dict[str, Setting]:
    """kohya options for model x GPU, each with the reason it was chosen."""
    model = get_model(model) if isinstance(model, str) else model
    gpu = get_gpu(gpu) if isinstance(gpu, str) else gpu
    if attention not in ATTENTIONS:
        raise PresetError(f"unknown attention {attention!r}", hint="use sdpa or xformers")
    if model.family is None:
        try:
            return training_settings(model, gpu, attention=attention)
        except PresetError as exc:
            # the planner's own hint says what it tried; the GPU that fits is the next step
            fits = smallest_fitting_gpu(model)
            hint = f"the smallest GPU preset it fits is {fits} (--gpu {fits})" if fits else ""
            raise PresetError(exc.message, hint=hint or exc.hint) from exc
    return _dit_settings(model, gpu, dit_plan(model, gpu, memory), attention)


def _dit_settings(
    model: ModelPreset, gpu: GpuPreset, plan: DitPlan, attention: str
) -> dict[str, Setting]:
    assert model.family is not None
    mem = model.family.memory
    total = f"about {plan.need_gb:g} GB of {gpu.vram_gb:g} GB"
    s: dict[str, Setting] = {}
    s["train_batch_size"] = Setting(
        plan.batch_size,
        f"fastest batch that fits {gpu.name} ({total}; each sample adds about "
        f"{mem.per_sample_gc_gb if plan.gradient_checkpointing else mem.per_sample_gb:g} GB)",
    )
    s["gradient_checkpointing"] = Setting(
        plan.gradient_checkpointing,
        f"saves about {(mem.per_sample_gb - mem.per_sample_gc_gb) * plan.batch_size:g} GB of "
        "activations for about 30% slower steps"
        if plan.gradient_checkpointing
        else "not needed: activations fit, and recomputing them would cost about 30% speed",
    )
    s["optimizer_type"] = Setting(
        plan.optimizer,
        f"8-bit optimizer states save about {mem.adamw_extra_gb:g} GB"
        if plan.optimizer == "AdamW8bit"
        else "torch AdamW: LoRA optimizer states are small and the fused optimizer is faster",
    )
    s["mixed_precision"] = Setting(
        "bf16" if gpu.bf16 else "fp16",
        f"{gpu.name} supports bf16 (what kohya's docs use for this family)"
        if gpu.bf16
        else f"{gpu.name} has no hardware bf16, so fp16",
    )
    s["save_precision"] = Setting("bf16", "bf16 LoRA weights, as kohya's DiT examples save them")
    # HunyuanImage and Anima choose attention with their own attn_mode option, and kohya's
    # sdpa flag would be a second, conflicting choice (model-families.md 2.4, 2.5)
    uses_attn_mode = any(key == "attn_mode" for key, _v, _r in model.family.options)
    if not uses_attn_mode:
        s[attention] = Setting(True, "PyTorch scaled-dot-product attention: fast, memory-efficient")
    s["cache_latents"] = Setting(True, "the VAE encodes each image once and leaves the GPU")
    s["cache_text_encoder_outputs"] = Setting(
        True,
        f"text encoders run once before training and leave the GPU (they need about "
        f"{mem.te_peak_gb:g} GB while caching)",
    )
    # every DiT family's script asserts TE caching and TE training exclude each other
    s["network_train_unet_only"] = Setting(
        True, "train the DiT only: needed for cached text-encoder outputs (kohya asserts)"
    )
    _lever_settings(s, mem, plan, gpu)
    return s


def _lever_settings(s: dict[str, Setting], mem: DitMemory, plan: DitPlan, gpu: GpuPreset) -> None:
    fp8_gb = round(mem.dit_gb * (1 - mem.fp8_factor), 1)
    # the family's own fp8 switch: fp8_base for FLUX, Chroma, SD3 and Lumina 2, fp8_scaled for
    # HunyuanImage
    # (kohya warns that fp8_base is not supported there), none for Anima
    if mem.fp8:
        s[mem.fp8] = Setting(
            plan.fp8,
            f"DiT weights in fp8 save about {fp8_gb:g} GB (slightly slower: upcast each step)"
            if plan.fp8
            else f"not needed: the DiT fits in 16 bit ({fp8_gb:g} GB more, no fp8 rounding)",
        )
    if plan.blocks_to_swap:
        # a swapped block in fp8 moves (and saves) a fraction of its 16-bit size
        factor = mem.fp8_factor if plan.fp8 else 1.0
        saved = plan.blocks_to_swap * mem.swap_unit_gb * factor
        # the planner's speed model: swapped weights add a fixed time to every step
        longer = 1 / (1 - plan.blocks_to_swap * mem.swap_slowdown * factor * plan.throughput)
        s["blocks_to_swap"] = Setting(
            plan.blocks_to_swap,
            f"keep {plan.blocks_to_swap} DiT blocks on the CPU (the fewest that fit): saves "
            f"about {saved:.1f} GB, steps about {longer - 1:.0%} longer",
        )
    # only HunyuanImage has fp8_scaled, and its 15 GB text encoder has levers of its own
    if mem.fp8 == "fp8_scaled":
        hunyuan_text_encoder(s, mem, plan.budget_gb)
        return
    # a note, not a setting: the fix is a different text-encoder file, which only the user has
    if not plan.te_fits and mem.te_fp8_hint:
        s["note:text_encoder"] = Setting(
            None,
            f"the text encoders need about {mem.te_peak_gb:g} GB while kohya caches their "
            f"outputs, more than {gpu.name} has free: {mem.te_fp8_hint}",
        )


def hunyuan_text_encoder(settings: dict[str, Setting], mem: DitMemory, budget: float) -> None:
    """HunyuanImage's Qwen2.5-VL (15 GB in bf16): fp8_vl halves it while caching; below
    that kohya's docs run it on the CPU with the cache on disk (docs:193)."""
    if mem.te_peak_gb <= budget:
        return
    if mem.te_peak_gb * 0.5 <= budget:
        settings["fp8_vl"] = Setting(
            True, f"Qwen2.5-VL in fp8 while caching: about {mem.te_peak_gb / 2:g} GB instead "
            f"of {mem.te_peak_gb:g}",
        )  # fmt: skip
        return
    settings["text_encoder_cpu"] = Setting(
        True, f"Qwen2.5-VL ({mem.te_peak_gb:g} GB) runs on the CPU while caching: it does "
        "not fit this card (slow once, free during training)",
    )  # fmt: skip
    settings["cache_text_encoder_outputs_to_disk"] = Setting(
        True, "cached outputs go to disk, as kohya's docs pair with text_encoder_cpu"
    )
