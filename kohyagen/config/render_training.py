"""The training config's values for a dataset x model x GPU, and why each was chosen.

Where a value works around kohya's parsing (resolution as a "W,H" string, text_encoder_lr
as a list, network_module with no default), the comment at the value names it.
"""

from __future__ import annotations

from pathlib import Path

from kohyagen.config.presets import GpuPreset, ModelPreset, Setting
from kohyagen.config.render_values import SEED, TARGET_CHECKPOINTS, Choices, StepPlan
from kohyagen.config.sample_prompts import family_sampling


def training_choices(
    model: ModelPreset,
    gpu: GpuPreset,
    settings: dict[str, Setting],
    plan: StepPlan,
    *,
    base_model: tuple[str, str],
    name: str,
    out_dir: Path,
    attention: str,
    samples: bool,
) -> Choices:
    """The training config's values, each with the reason it was chosen.

    The keys go in as the template writes them: model and network, learning, memory and
    speed, then outputs and samples.
    """
    c = Choices()
    _network_choices(c, model, base_model)
    _learning_choices(c, model, settings, plan)
    _memory_choices(c, model, settings, attention)
    _output_choices(c, model, settings, plan, name=name, out_dir=out_dir)
    if samples:
        _sample_choices(c, model, plan, out_dir)
    return c


def _network_choices(c: Choices, model: ModelPreset, base_model: tuple[str, str]) -> None:
    """The base model and the LoRA network: module, rank and alpha."""
    c.put("pretrained_model_name_or_path", *base_model)
    if model.v2:
        c.put("v2", True, f"{model.label} is a v2 model")
    if model.v_parameterization:
        c.put("v_parameterization", True, "768-v models predict v, not noise")
    # kohya's default is None and nothing checks it until train_network.py:644 crashes
    module_why = "kohya's LoRA (kohya has no default; None crashes)"
    alpha_why = "alpha = dim/2 scales updates by 0.5"
    if model.is_dit:
        module_why = f"kohya's LoRA module for {model.label} (the code's, not every doc's)"
        alpha_why = (
            f"alpha/dim = {model.network_alpha / model.network_dim:g} scales updates "
            "(kohya's example for this family)"
        )
    c.put("network_module", model.network_module, module_why)
    c.put("network_dim", model.network_dim, "LoRA rank: enough capacity for a subject or a style")
    c.put("network_alpha", float(model.network_alpha), alpha_why)


def _learning_choices(
    c: Choices, model: ModelPreset, settings: dict[str, Setting], plan: StepPlan
) -> None:
    """Which parts train, the optimizer, learning rates and schedule, and the epochs."""
    unet_only = settings["network_train_unet_only"]
    if unet_only.value:
        c.take("network_train_unet_only", unet_only)
    c.take("optimizer_type", settings["optimizer_type"])
    c.put("learning_rate", model.learning_rate, "base learning rate (= unet_lr)")
    c.put("unet_lr", model.unet_lr, f"usual {model.name} LoRA U-Net learning rate")
    if not unet_only.value:
        c.put(
            "text_encoder_lr",
            # a list: the option is nargs="*" in kohya, one value per text encoder
            [model.text_encoder_lr],
            "lower than the U-Net's: text encoders overfit fast (a list, as kohya parses it)",
        )
    c.put("lr_scheduler", "cosine", "decays smoothly, so late checkpoints are the settled ones")
    c.put("lr_warmup_steps", plan.warmup, "5% of the steps: avoids a rough start")
    if not model.is_dit:  # Min-SNR weights DDPM noise levels; the DiT families use flow matching
        c.put("min_snr_gamma", 5.0, "Min-SNR weighting: faster, steadier convergence")
    c.put(
        "max_train_epochs",
        plan.epochs,
        f"given with --epochs ({plan.image_views} image views, {plan.total_steps} steps)"
        if plan.epochs_given
        else f"{plan.per_epoch} images x repeats per epoch -> {plan.image_views} image views, "
        f"{plan.total_steps} steps at batch {plan.batch} (aim about {model.target_samples} views)",
    )


def _memory_choices(
    c: Choices, model: ModelPreset, settings: dict[str, Setting], attention: str
) -> None:
    """Batch, precision, attention and caches: what the memory plan chose for this GPU."""
    c.take("train_batch_size", settings["train_batch_size"])
    c.take("gradient_checkpointing", settings["gradient_checkpointing"])
    c.put("seed", SEED, "fixed seed: reruns are comparable")
    c.put("max_data_loader_n_workers", 2, "latents are cached, so few loader workers are needed")
    c.put("persistent_data_loader_workers", True, "keep workers between epochs (faster epochs)")
    for key in ("mixed_precision", attention, "cache_latents"):
        if key in settings:
            c.take(key, settings[key])
    te_cache = settings.get("cache_text_encoder_outputs")
    if te_cache is not None and te_cache.value:
        c.take("cache_text_encoder_outputs", te_cache)
    if model.is_sdxl and settings["mixed_precision"].value == "fp16":
        c.put("no_half_vae", True, "SDXL's VAE overflows in fp16 (NaN latents): keep it in fp32")
    for key in ("fp8_base", "fp8_scaled"):
        if key in settings and settings[key].value:
            c.take(key, settings[key])


def _output_choices(
    c: Choices, model: ModelPreset, settings: dict[str, Setting], plan: StepPlan, *, name: str,
    out_dir: Path,
) -> None:  # fmt: skip
    """Where the dataset file, checkpoints and logs are, and how checkpoints are named."""
    c.put(
        "dataset_config", str(out_dir / "dataset_config.toml"), "the dataset file next to this one"
    )
    c.put(
        "resolution",
        # kohya's prepare_dataset_args calls .split(",") on it: an int crashes
        str(model.resolution),
        f'{model.name} native size (a string here; kohya splits it as "W,H")',
    )
    c.put("output_dir", str(out_dir / "output"), "checkpoints go here")
    c.put(
        "output_name", name, "checkpoint file names: NAME-000002.safetensors ... NAME.safetensors"
    )
    c.put("save_model_as", "safetensors", "safe and loadable everywhere")
    c.take("save_precision", settings["save_precision"])
    c.put(
        "save_every_n_epochs",
        plan.save_every,
        f"about {min(plan.epochs, TARGET_CHECKPOINTS)} checkpoints to pick the best from",
    )
    c.put("logging_dir", str(out_dir / "logs"), "TensorBoard logs, read by `kohyagen report`")
    c.put("log_with", "tensorboard", "loss curves for `kohyagen report` and `pick`")
    # kohya adds a timestamp: logs/<prefix><YYYYmmddHHMMSS>/network_train/
    c.put("log_prefix", f"{name}_", "names each run's log folder after the LoRA")


def _sample_choices(c: Choices, model: ModelPreset, plan: StepPlan, out_dir: Path) -> None:
    """Preview images at every saved checkpoint, from the rendered sample_prompts.txt."""
    c.put(
        "sample_prompts",
        str(out_dir / "sample_prompts.txt"),
        "preview prompts: the trigger alone, with common tags, somewhere new, and without",
    )
    c.put(
        "sample_every_n_epochs", plan.save_every, "a preview image for every saved checkpoint"
    )
    if not model.is_dit:  # the DiT samplers do not read it (model-families.md section 5)
        sampling = family_sampling(model)
        c.put(
            "sample_sampler",
            sampling.sampler,
            f"suits {model.name} at the {sampling.steps} steps of sample_prompts.txt",
        )
