"""The diffusion training objective: noise, timesteps, targets and loss weights."""

from __future__ import annotations

from typing import Any

import torch


def make_noise_scheduler(v_parameterization: bool, *, zero_terminal_snr: bool = False) -> Any:
    """DDPM with SD's betas, as kohya builds it (the model folder's scheduler is ignored).

    zero_terminal_snr rescales the betas so the last step is pure noise; its alpha-bar is
    then nudged above 0 so SNR-based weights stay finite.
    """
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        prediction_type="v_prediction" if v_parameterization else "epsilon",
        rescale_betas_zero_snr=zero_terminal_snr,
    )
    if zero_terminal_snr:
        # Still pure noise to float precision, yet a finite SNR for min-SNR and debiasing.
        # diffusers sets alphas_cumprod in an __init__ its typing does not follow
        scheduler.alphas_cumprod[-1] = 1e-8  # type: ignore[attr-defined]
    return scheduler


def pyramid_noise(
    noise: torch.Tensor,
    *,
    iterations: int,
    discount: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Multi-resolution noise: coarser random fields added with shrinking weight, then
    renormalised to unit variance (kohya's multires_noise_*)."""
    import random

    b, c, h, w = noise.shape
    rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=generator)))
    out = noise.clone()
    # kohya counts from 0: the first pass adds a second full-resolution field at weight 1.
    for i in range(iterations):
        factor = (2 + 2 * rng.random()) ** i
        hn, wn = max(1, int(h / factor)), max(1, int(w / factor))
        coarse = torch.randn((b, c, hn, wn), generator=generator, device="cpu").to(noise)
        up = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")
        out = out + up * discount**i
        if hn == 1 or wn == 1:
            break
    return out / out.std()


def sample_noise(
    latents: torch.Tensor,
    *,
    noise_offset: float | None,
    random_strength: bool,
    generator: torch.Generator | None = None,
    multires_iterations: int | None = None,
    multires_discount: float = 0.3,
    adaptive_noise_scale: float | None = None,
) -> torch.Tensor:
    """Training noise: gaussian, plus the offset noise (scaled up per channel by the latents'
    mean with adaptive_noise_scale), then the pyramid on top, in kohya's order."""
    noise = torch.randn(latents.shape, generator=generator, device="cpu").to(latents)
    if noise_offset:
        strength: float | torch.Tensor = noise_offset
        if random_strength:
            strength = torch.rand(1, generator=generator).item() * noise_offset
        if adaptive_noise_scale is not None:
            # Brighter or darker latents (larger |mean| per channel) get a larger offset.
            mean = latents.float().mean(dim=(2, 3), keepdim=True).abs()
            strength = torch.clamp(strength + adaptive_noise_scale * mean, min=0.0).to(latents)
        offset = torch.randn(
            (latents.shape[0], latents.shape[1], 1, 1), generator=generator, device="cpu"
        ).to(latents)
        noise = noise + strength * offset
    if multires_iterations:
        noise = pyramid_noise(
            noise, iterations=multires_iterations, discount=multires_discount, generator=generator
        )
    return noise


def snr_weights(
    scheduler: Any, timesteps: torch.Tensor, *, gamma: float | None, v_prediction: bool
) -> torch.Tensor:
    """min-SNR-gamma weights per sample (1.0 when gamma is unset)."""
    if not gamma:
        return torch.ones(timesteps.shape[0], device=timesteps.device)
    ac = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = ac / (1 - ac)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if v_prediction else clipped / snr


def huber_threshold(
    scheduler: Any,
    timesteps: torch.Tensor,
    *,
    schedule: str = "snr",
    c: float = 0.1,
    scale: float = 1.0,
) -> torch.Tensor:
    """Per-sample huber_c for loss_type huber / smooth_l1 (kohya's huber_schedule).

    constant: c * scale everywhere; exponential: scale * c**(t / T), from scale at t = 0
    down to c * scale at the last step; snr: from 1 at t = 0 down towards c as the noise
    level sigma = sqrt((1 - a) / a) grows (kohya does not apply huber_scale here).
    """
    import math

    t = timesteps.float()
    if schedule == "exponential":
        rate = -math.log(c) / scheduler.config.num_train_timesteps
        return torch.exp(-rate * t) * scale
    if schedule == "snr":
        ac = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
        sigmas = ((1.0 - ac) / ac) ** 0.5
        return (1 - c) / (1 + sigmas) ** 2 + c
    if schedule == "constant":
        return torch.full((timesteps.shape[0],), c * scale, device=timesteps.device)
    raise ValueError(f"unknown huber_schedule {schedule!r}")  # config.py refuses others first


def elementwise_loss(
    pred: torch.Tensor, target: torch.Tensor, loss_type: str, huber_c: Any = None
) -> torch.Tensor:
    """The unreduced loss kohya's loss_type names; huber_c is per sample for huber/smooth_l1."""
    if loss_type == "l1":
        return torch.nn.functional.l1_loss(pred, target, reduction="none")
    if loss_type in ("huber", "smooth_l1"):
        c = huber_c.view(-1, *([1] * (pred.ndim - 1)))
        # Pseudo-Huber: quadratic below c, linear above; huber scales it by 2c, smooth_l1 by 2.
        soft = torch.sqrt((pred - target) ** 2 + c**2) - c
        return 2 * c * soft if loss_type == "huber" else 2 * soft
    return torch.nn.functional.mse_loss(pred, target, reduction="none")


def clamped_snr(scheduler: Any, timesteps: torch.Tensor) -> torch.Tensor:
    ac = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    return torch.clamp(ac / (1 - ac), max=1000)


def diffusion_loss(
    unet: Any,
    scheduler: Any,
    latents: torch.Tensor,
    hidden: torch.Tensor,
    *,
    timesteps: torch.Tensor,
    noise: torch.Tensor,
    weights: torch.Tensor,
    v_prediction: bool,
    min_snr_gamma: float | None,
    added_cond: dict[str, torch.Tensor] | None = None,
    input_perturbation: torch.Tensor | None = None,
    debiased: bool = False,
    scale_v_like_eps: bool = False,
    loss_type: str = "l2",
    huber_schedule: str = "snr",
    huber_c: float = 0.1,
    huber_scale: float = 1.0,
    v_pred_like: float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample weighted loss (loss_type l2, l1, huber or smooth_l1) between the U-Net's
    prediction and its target.

    input_perturbation: extra noise mixed into the U-Net input only (ip_noise_gamma);
    debiased: kohya's debiased estimation weights; scale_v_like_eps: kohya's
    scale_v_pred_loss_like_noise_pred; v_pred_like: kohya's v_pred_like_loss.
    """
    noisy_noise = noise if input_perturbation is None else noise + input_perturbation
    noisy = scheduler.add_noise(latents, noisy_noise, timesteps)
    kwargs = {"added_cond_kwargs": added_cond} if added_cond is not None else {}
    pred = unet(noisy, timesteps, hidden, **kwargs).sample
    target = scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
    threshold = None
    if loss_type in ("huber", "smooth_l1"):
        threshold = huber_threshold(
            scheduler, timesteps, schedule=huber_schedule, c=huber_c, scale=huber_scale
        )
    per_sample = elementwise_loss(pred.float(), target.float(), loss_type, threshold)
    if mask is not None:
        per_sample = _masked(per_sample, mask)
    per_sample = per_sample.mean(dim=[1, 2, 3])
    per_sample = per_sample * weights.to(per_sample.device)
    per_sample = _snr_weighted(
        per_sample,
        scheduler,
        timesteps,
        min_snr_gamma=min_snr_gamma,
        v_prediction=v_prediction,
        scale_v_like_eps=scale_v_like_eps,
        v_pred_like=v_pred_like,
        debiased=debiased,
    )
    return per_sample.mean()


def _masked(per_sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """alpha_mask / masked_loss: the (B, H, W) image mask averaged down to latent size."""
    small = torch.nn.functional.interpolate(
        mask.to(per_sample.device, per_sample.dtype).unsqueeze(1),
        size=per_sample.shape[2:],
        mode="area",
    )
    return per_sample * small


def _snr_weighted(
    per_sample: torch.Tensor,
    scheduler: Any,
    timesteps: torch.Tensor,
    *,
    min_snr_gamma: float | None,
    v_prediction: bool,
    scale_v_like_eps: bool,
    v_pred_like: float | None,
    debiased: bool,
) -> torch.Tensor:
    """The per-sample losses times kohya's SNR-based weights, applied in kohya's order."""
    per_sample = per_sample * snr_weights(
        scheduler, timesteps, gamma=min_snr_gamma, v_prediction=v_prediction
    )
    if scale_v_like_eps:
        snr = clamped_snr(scheduler, timesteps)
        per_sample = per_sample * snr / (snr + 1)
    if v_pred_like:
        # kohya's v_pred_like_loss: add the loss as v-prediction would weight it, times v.
        snr = clamped_snr(scheduler, timesteps)
        per_sample = per_sample + per_sample / (snr / (snr + 1)) * v_pred_like
    if debiased:
        snr = clamped_snr(scheduler, timesteps)
        per_sample = per_sample * (1 / (snr + 1) if v_prediction else 1 / torch.sqrt(snr))
    return per_sample
