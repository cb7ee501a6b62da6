"""What a LoRA run will take before it starts: steps, wall time, VRAM fit, cost by provider.

The figures are data, not code: templates/throughput.toml holds the per-GPU and per-model
throughput, overhead and memory figures, templates/providers.toml the rental prices, each
with its source. The user's own prices (prices.toml, see load_prices) extend or replace
the provider table. Time is seconds per step (published SDXL figures per GPU, scaled by
model, pixels, batch and the GPU's relative speed; see templates/throughput.toml) times
the steps, so a bigger batch means fewer, longer but cheaper-per-image steps (the minutes
are train_time's; a dataset folder's counts are dataset_counts').
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from kohyagen.config.presets import fit_params
from kohyagen.errors import ConfigError, PresetError
from kohyagen.estimate.prices import default_prices_path, load_prices, price_for
from kohyagen.estimate.throughput import (
    CPU,
    MEMORY_SOURCE,
    GpuInfo,
    Span,
    gpu_info,
    memory_needed,
    provider_data,
    throughput_data,
)
from kohyagen.estimate.train_time import Levers, levers_for, overhead_minutes, train_minutes

__all__ = [
    "CPU",
    "Estimate",
    "GpuInfo",
    "ProviderCost",
    "estimate",
    "gpu_info",
    "load_prices",
    "memory_needed",
    "provider_data",
    "steps_for",
    "throughput_data",
]

# Every model preset (the throughput table has a factor for each).
MODELS = ("sd15", "sd2", "sdxl", "flux", "chroma", "sd3", "lumina2", "hunyuan-image", "anima")
# How far off the range may be, by the kind of figure it rests on.
UNCERTAINTY = {"measured": 0.15, "published": 0.30, "derived": 0.50, "unknown": 1.0}
DEFAULT_REPEATS = 10
DEFAULT_EPOCHS = 10


@dataclass(frozen=True)
class ProviderCost:
    provider: str
    label: str
    price_per_hour: Span
    setup_minutes: Span
    cost: Span  # dollars for setup + startup + training, low..high
    basis: str  # "published", "scaled" (carried over from another GPU's price) or "user"
    source: str


@dataclass(frozen=True)
class Estimate:
    model: str
    gpu: str
    gpu_label: str
    vram_gb: float | None
    images: int
    images_x_repeats: int
    epochs: int
    batch_size: int
    gradient_accumulation_steps: int
    resolution: int
    steps_per_epoch: int
    steps: int
    train_minutes: Span | None
    overhead_minutes: Span | None
    total_minutes: Span | None
    memory_gb: float | None
    fits: str  # "yes", "tight", "no" or "unknown"
    basis: str  # "published", "derived" or "unknown"
    uncertainty: float | None  # e.g. 0.3 for +-30%
    certainty: str
    sources: tuple[str, ...]
    costs: tuple[ProviderCost, ...]
    own_price_per_hour: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def own_cost(self) -> Span | None:
        """Cost at the user's own hourly price (no setup time: the machine is already up)."""
        if self.own_price_per_hour is None or self.total_minutes is None:
            return None
        low, high = self.total_minutes
        return (low / 60 * self.own_price_per_hour, high / 60 * self.own_price_per_hour)

    @property
    def budget_cost(self) -> float | None:
        """The figure a --budget is held against: the high end at the user's own price, else
        the high end of the provider that is cheapest in the worst case; None when unknown."""
        if self.own_cost is not None:
            return self.own_cost[1]
        if not self.costs:
            return None
        return min(c.cost[1] for c in self.costs)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["own_cost"] = self.own_cost
        data["budget_cost"] = self.budget_cost
        return data


# ---------------------------------------------------------------- the estimate


def steps_for(images_x_repeats: int, *, epochs: int, batch_size: int, grad_accum: int = 1) -> int:
    """kohya's optimizer steps: ceil(images x repeats / batch) per epoch, / accumulation."""
    per_epoch = math.ceil(images_x_repeats / batch_size)
    return math.ceil(per_epoch / grad_accum) * epochs


def estimate(
    *,
    model: str,
    gpu: str,
    images: int,
    images_x_repeats: int | None = None,
    repeats: int = DEFAULT_REPEATS,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = 2,
    resolution: int | None = None,
    steps_per_epoch: int | None = None,
    gradient_accumulation_steps: int = 1,
    gradient_checkpointing: bool = False,
    optimizer: str | None = None,
    unet_only: bool | None = None,
    prices: dict[str, dict[str, Any]] | None = None,
    own_price_per_hour: float | None = None,
    use_measured: bool = True,
) -> Estimate:
    """Estimate one LoRA run. images_x_repeats defaults to images x repeats;
    steps_per_epoch (e.g. from a bucketed dataset check) overrides the plain division."""
    _check_inputs(model, images, epochs, batch_size, gradient_accumulation_steps)
    model_data = throughput_data()["models"][model]
    resolution = resolution or model_data["native_resolution"]
    seen_per_epoch = images_x_repeats if images_x_repeats is not None else images * repeats
    micro_per_epoch = steps_per_epoch or math.ceil(seen_per_epoch / batch_size)
    per_epoch = math.ceil(micro_per_epoch / gradient_accumulation_steps)
    info = gpu_info(gpu)
    notes: list[str] = []
    levers = levers_for(model, info)
    if levers.note:
        notes.append(levers.note)
    gradient_checkpointing = gradient_checkpointing or levers.gradient_checkpointing
    memory, fits = _memory_fit(
        model, info, batch_size, resolution, gradient_checkpointing, optimizer, unet_only,
        levers, notes,
    )  # fmt: skip
    sources = [f"memory ({model}): {MEMORY_SOURCE}"]
    head: dict[str, Any] = dict(
        model=model, gpu=info.name, gpu_label=info.label, images=images,
        images_x_repeats=seen_per_epoch, epochs=epochs, batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, resolution=resolution,
        steps_per_epoch=per_epoch, steps=per_epoch * epochs, own_price_per_hour=own_price_per_hour,
    )  # fmt: skip
    if info.name == CPU:
        return _cpu_estimate(head, sources, notes)
    micro_steps = micro_per_epoch * epochs
    train, basis = train_minutes(
        model, info, resolution, batch_size, gradient_checkpointing, micro_steps,
        seen_per_epoch * epochs, levers, use_measured, sources, notes,
    )  # fmt: skip
    overhead = overhead_minutes(model, images, sources)
    total = (train[0] + overhead[0], train[1] + overhead[1])
    uncertainty = UNCERTAINTY[basis]
    return Estimate(
        **head, vram_gb=info.vram_gb, train_minutes=train, overhead_minutes=overhead,
        total_minutes=total, memory_gb=memory, fits=fits, basis=basis, uncertainty=uncertainty,
        certainty=f"±{uncertainty:.0%}: {CERTAINTY[basis]}", sources=tuple(sources),
        costs=tuple(_costs(info, total, prices, notes)), notes=tuple(notes),
    )  # fmt: skip


def _cpu_estimate(head: dict[str, Any], sources: list[str], notes: list[str]) -> Estimate:
    notes.append(
        "no throughput figures for training on a CPU: only the tiny demo model is "
        "practical there; pass --gpu NAME for the GPU you will rent"
    )
    return Estimate(
        **head, vram_gb=None, train_minutes=None, overhead_minutes=None, total_minutes=None,
        memory_gb=None, fits="unknown", basis="unknown", uncertainty=None,
        certainty="unknown: no throughput figures for CPU training", sources=tuple(sources),
        costs=(), notes=tuple(notes),
    )  # fmt: skip


CERTAINTY = {
    "measured": "from your own runs on this GPU",
    "published": "from published figures for this GPU and model",
    "derived": "scaled from a related GPU or model",
    "unknown": "no figure for this GPU: a wide guess",
}


def _check_inputs(model: str, images: int, epochs: int, batch: int, accumulation: int) -> None:
    if model not in throughput_data()["models"]:
        models = ", ".join(throughput_data()["models"])
        raise PresetError(f"unknown model {model!r}", hint=f"use one of: {models}")
    if images < 1:
        raise ConfigError("an estimate needs at least one image", hint="pass --images N")
    for label, value in (
        ("epochs", epochs), ("batch size", batch), ("gradient accumulation", accumulation),
    ):  # fmt: skip
        if value < 1:
            raise ConfigError(f"{label} must be at least 1, got {value}")


def _memory_fit(
    model: str, info: GpuInfo, batch: int, resolution: int, gc: bool, optimizer: str | None,
    unet_only: bool | None, levers: Levers, notes: list[str],
) -> tuple[float | None, str]:  # fmt: skip
    memory = memory_needed(
        model, batch_size=batch, resolution=resolution, gradient_checkpointing=gc,
        optimizer=optimizer, unet_only=unet_only, fp8=levers.fp8,
        blocks_to_swap=levers.blocks_to_swap,
    )  # fmt: skip
    if info.vram_gb is None:
        return None, "unknown"
    usable = fit_params().usable_fraction * info.vram_gb
    fits = "yes" if memory <= usable else "tight" if memory <= info.vram_gb else "no"
    if fits == "no":
        notes.append(
            f"needs about {memory:g} GB but the GPU has {info.vram_gb:g} GB: lower the "
            "batch size or turn on gradient_checkpointing"
        )
    return memory, fits


def _costs(info: GpuInfo, total: Span, prices: dict | None, notes: list[str]) -> list[ProviderCost]:
    table = prices if prices is not None else load_prices()
    costs: list[ProviderCost] = []
    for name, provider in table.items():
        found = price_for(provider, info)
        if found is None:
            notes.append(
                f"no {info.label} price for {provider['label']}: add it to "
                f"{default_prices_path()} (see templates/providers.toml)"
            )
            continue
        price, price_basis = found
        setup = provider["setup_minutes"]
        cost = ((total[0] + setup[0]) / 60 * price[0], (total[1] + setup[1]) / 60 * price[1])
        source = provider["source"]
        if price_basis == "scaled":
            source += "; carried over from its RTX 4090 price by the guide's typical-rate ratio"
        costs.append(ProviderCost(name, provider["label"], price, setup, cost, price_basis, source))
    costs.sort(key=lambda c: c.cost[0])
    return costs
