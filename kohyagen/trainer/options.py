"""Which kohya options the builtin trainer implements, and which of their values."""

from __future__ import annotations

from typing import Any

# Options the builtin trainer implements (any value). Everything else kohya knows must stay
# at its default, or the run is refused before any work is done. mem_eff_attn needs nothing:
# diffusers already runs attention through PyTorch's memory-efficient SDPA.
SUPPORTED: frozenset[str] = frozenset(
    """
    pretrained_model_name_or_path v2 v_parameterization tokenizer_cache_dir vae
    train_data_dir reg_data_dir dataset_config caption_extension caption_extention
    resolution enable_bucket min_bucket_reso max_bucket_reso bucket_reso_steps
    bucket_no_upscale train_batch_size dataset_repeats shuffle_caption keep_tokens
    caption_separator keep_tokens_separator caption_dropout_rate
    caption_dropout_every_n_epochs caption_tag_dropout_rate caption_prefix caption_suffix
    flip_aug color_aug random_crop face_crop_aug_range resize_interpolation alpha_mask
    masked_loss secondary_separator enable_wildcard token_warmup_min token_warmup_step
    cache_latents cache_latents_to_disk cache_text_encoder_outputs vae_batch_size
    max_data_loader_n_workers persistent_data_loader_workers validation_split
    validation_seed validate_every_n_epochs validate_every_n_steps max_validation_steps
    prior_loss_weight scale_weight_norms clip_skip max_token_length skip_cache_check
    network_module network_dim network_alpha network_train_unet_only
    network_train_text_encoder_only network_weights dim_from_weights base_weights
    base_weights_multiplier mem_eff_attn optimizer_type optimizer_args learning_rate unet_lr
    text_encoder_lr lr_scheduler lr_warmup_steps lr_scheduler_num_cycles lr_scheduler_power
    lr_scheduler_args lr_scheduler_type lr_decay_steps lr_scheduler_min_lr_ratio
    lr_scheduler_timescale max_grad_norm gradient_accumulation_steps use_8bit_adam
    use_lion_optimizer max_train_steps max_train_epochs seed mixed_precision
    gradient_checkpointing full_fp16 full_bf16 sdpa xformers noise_offset
    noise_offset_random_strength multires_noise_iterations multires_noise_discount
    adaptive_noise_scale zero_terminal_snr loss_type huber_schedule huber_c huber_scale
    min_snr_gamma ip_noise_gamma ip_noise_gamma_random_strength debiased_estimation_loss
    scale_v_pred_loss_like_noise_pred v_pred_like_loss min_timestep max_timestep no_half_vae
    lowram highvram output_dir output_name save_model_as save_precision save_every_n_epochs
    save_every_n_steps save_n_epoch_ratio save_last_n_epochs save_last_n_epochs_state
    save_last_n_steps save_last_n_steps_state save_state save_state_on_train_end resume
    logging_dir log_prefix network_args network_dropout log_with log_tracker_name
    training_comment no_metadata metadata_author metadata_description metadata_license
    metadata_tags metadata_title metadata_trigger_phrase metadata_usage_hint metadata_thumbnail
    metadata_merged_from metadata_preprocessor metadata_is_negative_embedding sample_prompts
    sample_every_n_epochs sample_every_n_steps sample_sampler sample_at_first config_file
    console_log_level console_log_file console_log_simple ddp_timeout ddp_gradient_as_bucket_view ddp_static_graph dynamo_backend
    """.split()  # noqa: SIM905 (a word list reads better than 140 quoted lines)
)

# Options whose values are only partly implemented: the allowed values.
ALLOWED_VALUES: dict[str, tuple[Any, ...]] = {
    "network_module": ("networks.lora",),
    "optimizer_type": (
        "",
        "adamw",
        "adamw8bit",
        "lion",
        "prodigy",
        "sgdnesterov",
    ),
    "lr_scheduler": (
        "constant",
        "constant_with_warmup",
        "linear",
        "cosine",
        "cosine_with_restarts",
        "polynomial",
        "cosine_with_min_lr",
        "warmup_stable_decay",
        "inverse_sqrt",
        "piecewise_constant",
    ),
    "mixed_precision": ("no", "fp16", "bf16"),
    "console_log_level": (None, "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    "loss_type": ("l2", "l1", "huber", "smooth_l1"),
    "huber_schedule": ("constant", "exponential", "snr"),
    "max_token_length": (None, 75, 150, 225),
    "save_precision": (None, "float", "fp16", "bf16"),
    "save_model_as": ("safetensors", "ckpt", "pt"),
    "log_with": (None, "tensorboard"),
    "sample_sampler": (
        "ddim",
        "pndm",
        "lms",
        "euler",
        "k_euler",
        "euler_a",
        "k_euler_a",
        "dpmsolver",
        "dpmsolver++",
        "dpmsingle",
        "heun",
        "k_dpm_2",
        "k_dpm_2_a",
    ),
}

KOHYA_HINT = "use the kohya backend (kohyagen train --backend kohya) for these options"

# dataset_config keys the builtin trainer does not implement, with kohya's defaults: a
# value other than the default refuses the run (the strict schema already rejects typos).
DATASET_UNSUPPORTED_DEFAULTS: dict[str, Any] = {
    "custom_attributes": None,
    "network_multiplier": 1.0,
    "conditioning_data_dir": None,
    "metadata_file": None,
}

# network_args keys of networks.lora that are implemented.
NETWORK_ARGS: tuple[str, ...] = (
    "conv_dim",
    "conv_alpha",
    "rank_dropout",
    "module_dropout",
    "loraplus_lr_ratio",
    "loraplus_unet_lr_ratio",
    "loraplus_text_encoder_lr_ratio",
)
