"""The module accelerate prepares: base models plus LoRA, whose forward is the training loss.

Wrapping everything in one module lets DistributedDataParallel see the forward pass, so
the LoRA gradients are synchronised across processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from kohyagen.errors import ConfigError

if TYPE_CHECKING:
    from types import SimpleNamespace

    from kohyagen.trainer.config import TrainerConfig
    from kohyagen.trainer.dataset_spec import SubsetSpec
    from kohyagen.trainer.lora import LoRANetwork
    from kohyagen.trainer.models import Components


class TrainingModel(torch.nn.Module):
    """U-Net, text encoders and the LoRA network in one module, so DDP syncs the LoRA grads."""

    def __init__(
        self,
        components: Components,
        network: LoRANetwork,
        *,
        args: SimpleNamespace,
        noise_scheduler: Any,
        needs_vae: bool = True,
    ) -> None:
        super().__init__()
        self.components = components
        self.unet = components.unet
        # Caption -> (hidden states, pooled) when cache_text_encoder_outputs is on; the
        # text encoders are then not part of this module (they may live on the CPU).
        self.text_cache: dict[str, tuple] | None = None
        self.text_encoders = torch.nn.ModuleList(components.text_encoders)
        # With cached latents the VAE is not registered, so prepare() leaves it parked.
        if needs_vae:
            self.vae = components.vae
        self.network = network
        self.args = args
        self.noise_scheduler = noise_scheduler

    def latents_of(self, batch: dict[str, Any]) -> torch.Tensor:
        import torch

        if "latents" in batch:
            return batch["latents"]
        with torch.no_grad():
            vae = self.components.vae
            param = next(vae.parameters())
            pixels = batch["pixels"].to(param.device, param.dtype)
            dist = vae.encode(pixels).latent_dist
            return (dist.sample() * self.components.scaling_factor).float()

    def forward(
        self, batch: dict[str, Any], timesteps: Any = None, noise: Any = None
    ) -> torch.Tensor:
        """The batch's training loss (or, given timesteps and noise, its validation loss)."""
        from kohyagen.trainer.loss import diffusion_loss

        args = self.args
        device = next(self.unet.parameters()).device
        latents = self.latents_of(batch).to(device)
        dtype = next(self.unet.parameters()).dtype
        hidden, pooled = self.text_states(batch["captions"], device)
        perturbation = None
        if noise is None:  # training; validation passes fixed noise and gets no perturbation
            noise, perturbation = self.training_noise(latents, device, dtype)
        if timesteps is None:
            lo = int(args.min_timestep or 0)
            hi = int(args.max_timestep or 1000)
            timesteps = torch.randint(lo, hi, (latents.shape[0],), device=device)
        added = None
        if self.components.sdxl:
            added = {
                "text_embeds": pooled.to(dtype),
                "time_ids": batch["time_ids"].to(device, dtype),
            }
        return diffusion_loss(
            self.unet,
            self.noise_scheduler,
            latents.to(dtype),
            hidden.to(dtype),
            timesteps=timesteps,
            noise=noise.to(device, dtype),
            weights=batch["weights"],
            v_prediction=self.components.v_parameterization,
            min_snr_gamma=args.min_snr_gamma,
            added_cond=added,
            input_perturbation=perturbation,
            debiased=bool(args.debiased_estimation_loss),
            loss_type=args.loss_type or "l2",
            v_pred_like=args.v_pred_like_loss,
            mask=batch.get("alpha_masks"),
            huber_schedule=args.huber_schedule or "snr",
            huber_c=float(args.huber_c if args.huber_c is not None else 0.1),
            huber_scale=float(args.huber_scale if args.huber_scale is not None else 1.0),
            scale_v_like_eps=bool(args.scale_v_pred_loss_like_noise_pred)
            and self.components.v_parameterization,
        )

    def text_states(self, captions: list[str], device: torch.device) -> tuple[Any, Any]:
        """The captions' hidden states and pooled output, from the cache or the encoders."""
        from kohyagen.trainer.models import encode_prompts

        args = self.args
        if self.text_cache is not None:
            entries = [self.text_cache[c] for c in captions]
            hidden = torch.stack([e[0] for e in entries]).to(device)
            pooled = (
                torch.stack([e[1] for e in entries]).to(device)
                if entries[0][1] is not None
                else None
            )
        else:
            train_te = len(self.network.text_encoder_loras) > 0 and self.training
            with torch.set_grad_enabled(train_te):
                hidden, pooled = encode_prompts(
                    self.components,
                    captions,
                    clip_skip=args.clip_skip,
                    device=device,
                    max_token_length=args.max_token_length,
                )
        return hidden, pooled

    def training_noise(
        self, latents: torch.Tensor, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The noise to add and the ip_noise_gamma perturbation, in kohya's order of draws."""
        from kohyagen.trainer.loss import sample_noise

        args = self.args
        perturbation = None
        noise = sample_noise(
            latents,
            noise_offset=args.noise_offset,
            random_strength=bool(args.noise_offset_random_strength),
            multires_iterations=args.multires_noise_iterations,
            multires_discount=float(args.multires_noise_discount or 0.3),
            adaptive_noise_scale=args.adaptive_noise_scale,
        )
        if args.ip_noise_gamma:
            strength = float(args.ip_noise_gamma)
            if args.ip_noise_gamma_random_strength:
                strength *= torch.rand(1).item()
            perturbation = (strength * torch.randn(latents.shape)).to(device, dtype)
        return noise, perturbation

    def cache_text_outputs(self, captions: list[str], *, batch_size: int = 8) -> None:
        """Encode every caption once, then drop the text encoders from this module."""
        from kohyagen.trainer.models import encode_prompts

        device = next(self.components.text_encoders[0].parameters()).device
        cache: dict[str, tuple] = {}
        unique = sorted(set(captions))
        with torch.no_grad():
            for start in range(0, len(unique), batch_size):
                chunk = unique[start : start + batch_size]
                hidden, pooled = encode_prompts(
                    self.components,
                    chunk,
                    clip_skip=self.args.clip_skip,
                    device=device,
                    max_token_length=self.args.max_token_length,
                )
                for i, caption in enumerate(chunk):
                    cache[caption] = (
                        hidden[i].float().cpu(),
                        pooled[i].float().cpu() if pooled is not None else None,
                    )
        self.text_cache = cache
        self.text_encoders = torch.nn.ModuleList()


def check_text_cache(
    args: SimpleNamespace, network: LoRANetwork, subsets: list[SubsetSpec], cfg: TrainerConfig
) -> None:
    """kohya's conditions for cache_text_encoder_outputs: fixed captions, frozen encoders."""
    if len(network.text_encoder_loras):
        raise ConfigError(
            "cache_text_encoder_outputs needs network_train_unet_only = true",
            path=cfg.path,
            hint="set network_train_unet_only = true or turn the cache off",
        )
    for sub in subsets:
        if (
            sub.shuffle_caption
            or sub.token_warmup_step
            or sub.enable_wildcard
            or sub.caption_dropout_rate
            or sub.caption_tag_dropout_rate
            or sub.caption_dropout_every_n_epochs
        ):
            raise ConfigError(
                "cache_text_encoder_outputs cannot be combined with shuffle_caption, caption"
                " dropout, token warmup or wildcards (captions must not change between epochs)",
                path=cfg.dataset_config_path or cfg.path,
                hint="turn those off or turn cache_text_encoder_outputs off",
            )
