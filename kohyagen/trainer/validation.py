"""Validation loss as kohya computes it: fixed timesteps, fixed noise, no gradients."""

from __future__ import annotations

from typing import Any

import torch


def validation_timesteps(min_timestep: int | None, max_timestep: int | None) -> list[int]:
    """Four timesteps evenly spaced strictly inside [min, max] (200, 400, 600, 800 by default)."""
    lo = int(min_timestep or 0)
    hi = int(max_timestep or 1000)
    return [lo + (hi - lo) * (i + 1) // 5 for i in range(4)]


def validation_loss(
    model: Any,
    val_set: Any,
    *,
    timesteps: list[int],
    seed: int,
    max_batches: int | None,
    device: torch.device | str,
    desc: str,
    postfix_key: str,
    show: bool,
) -> float | None:
    """Mean loss over the validation batches at each fixed timestep; None without a set."""
    from tqdm.auto import tqdm

    from kohyagen.trainer.loss import sample_noise

    if not len(val_set):
        return None
    batches = list(range(len(val_set)))
    if max_batches:
        batches = batches[: int(max_batches)]
    # Its own generator: the same noise every time, and training's RNG is left alone.
    gen = torch.Generator().manual_seed(seed)
    inner = model.module if hasattr(model, "module") else model
    losses: list[float] = []
    bar = tqdm(total=len(batches) * len(timesteps), desc=desc, disable=not show, leave=False)
    with torch.no_grad():
        for index in batches:
            batch = val_set[index]
            latents = inner.latents_of(batch)
            for t in timesteps:
                noise = sample_noise(
                    latents, noise_offset=None, random_strength=False, generator=gen
                )
                steps = torch.full((latents.shape[0],), t, device=device)
                loss = model(dict(batch, latents=latents), timesteps=steps, noise=noise)
                losses.append(float(loss))
                bar.update(1)
                bar.set_postfix({postfix_key: sum(losses) / len(losses), "timestep": t})
    bar.close()
    return sum(losses) / len(losses)
