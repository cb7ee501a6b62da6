"""What a LoRA run will take before it starts: steps, wall time, VRAM fit, cost by provider.

The figures are data, not code: templates/throughput.toml holds the per-GPU and per-model
throughput, overhead and memory figures, templates/providers.toml the rental prices, each
with its source. The user's own prices (prices.toml, see load_prices) extend or replace
the provider table. Time is modelled as proportional to the number of images seen
(images x repeats x epochs), so a bigger batch means fewer but longer steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
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
    gpu_minutes,
    memory_needed,
    parse_span,
    provider_data,
    throughput_data,
)

__all__ = [
    "CPU",
    "DatasetCounts",
    "Estimate",
    "GpuInfo",
    "ProviderCost",
    "count_dataset",
    "estimate",
    "gpu_info",
    "load_prices",
    "memory_needed",
    "provider_data",
    "steps_for",
    "throughput_data",
]

MODELS = ("sd15", "sd2", "sdxl")
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


def _measured_minutes(
    gpu: str, model: str, resolution: int, seen_total: int
) -> tuple[Span, str, str] | None:
    """Training minutes from the user's own runs on this GPU and model, if any."""
    from kohyagen.estimate.measurements import for_gpu, measurements_path

    runs = [m for m in for_gpu(gpu, model) if m.resolution > 0 and m.seconds_per_image > 0]
    if not runs:
        return None
    per_image = [m.seconds_per_image * (resolution / m.resolution) ** 2 for m in runs]
    span = (seen_total * min(per_image) / 60, seen_total * max(per_image) / 60)
    source = f"{len(runs)} of your runs of {model} on {gpu} ({measurements_path()})"
    return span, "measured", source


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
    data = throughput_data()
    if model not in MODELS:
        raise PresetError(f"unknown model {model!r}", hint="use one of: " + ", ".join(MODELS))
    if images < 1:
        raise ConfigError("an estimate needs at least one image", hint="pass --images N")
    for label, value in (
        ("epochs", epochs),
        ("batch size", batch_size),
        ("gradient accumulation", gradient_accumulation_steps),
    ):
        if value < 1:
            raise ConfigError(f"{label} must be at least 1, got {value}")
    model_data = data["models"][model]
    resolution = resolution or model_data["native_resolution"]
    seen_per_epoch = images_x_repeats if images_x_repeats is not None else images * repeats
    per_epoch = steps_per_epoch or math.ceil(seen_per_epoch / batch_size)
    per_epoch = math.ceil(per_epoch / gradient_accumulation_steps)
    steps = per_epoch * epochs
    info = gpu_info(gpu)
    notes: list[str] = []

    memory = memory_needed(
        model,
        batch_size=batch_size,
        resolution=resolution,
        gradient_checkpointing=gradient_checkpointing,
        optimizer=optimizer,
        unet_only=unet_only,
    )
    sources = [f"memory ({model}): {MEMORY_SOURCE}"]
    if info.vram_gb is None:
        fits = "unknown"
        memory_out: float | None = None
    else:
        memory_out = memory
        fits = (
            "yes"
            if memory <= fit_params().usable_fraction * info.vram_gb
            else "tight"
            if memory <= info.vram_gb
            else "no"
        )
        if fits == "no":
            notes.append(
                f"needs about {memory:g} GB but the GPU has {info.vram_gb:g} GB: lower the "
                "batch size or turn on gradient_checkpointing"
            )

    if info.name == CPU:
        notes.append(
            "no throughput figures for training on a CPU: only the tiny demo model is "
            "practical there; pass --gpu NAME for the GPU you will rent"
        )
        return Estimate(
            model, info.name, info.label, None, images, seen_per_epoch, epochs, batch_size,
            gradient_accumulation_steps, resolution, per_epoch, steps, None, None, None,
            None, "unknown", "unknown", None,
            "unknown: no throughput figures for CPU training", tuple(sources), (),
            own_price_per_hour, tuple(notes),
        )  # fmt: skip

    ref = data["reference"]
    ref_seen = ref["images"] * ref["repeats"] * ref["epochs"]
    ref_minutes, basis, gpu_sources = gpu_minutes(info)
    model_factor = parse_span(model_data["time_factor"], what="time_factor")
    if model_data["basis"] != "published" and basis == "published":
        basis = "derived"
    pixel_scale = (resolution / model_data["native_resolution"]) ** 2
    seen_total = seen_per_epoch * epochs
    train = tuple(
        m / ref_seen * seen_total * f * pixel_scale
        for m, f in zip(ref_minutes, model_factor, strict=True)
    )
    measured = _measured_minutes(info.name, model, resolution, seen_total) if use_measured else None
    if measured is not None:
        train, basis, measured_source = measured
        gpu_sources = [measured_source]
    overhead_data = data["overhead"][model]
    startup = parse_span(overhead_data["startup_seconds"], what="startup_seconds")
    per_image = parse_span(overhead_data["seconds_per_image"], what="seconds_per_image")
    overhead = tuple((s + images * p) / 60 for s, p in zip(startup, per_image, strict=True))
    total = (train[0] + overhead[0], train[1] + overhead[1])
    sources += [
        f"reference workload: {ref['images']} images x {ref['repeats']} repeats x "
        f"{ref['epochs']} epochs, batch {ref['batch_size']}, {ref['resolution']} px (guide)",
        *gpu_sources,
        f"model {model}: {model_data['source']}",
        f"overhead ({model}): {overhead_data['source']}",
    ]
    if pixel_scale != 1:
        notes.append(
            f"time scaled by the pixel count: {resolution} px vs {model}'s native "
            f"{model_data['native_resolution']} px (x{pixel_scale:.2f})"
        )

    uncertainty = UNCERTAINTY[basis]
    certainty = {
        "measured": "from your own runs on this GPU",
        "published": "from published figures for this GPU",
        "derived": "scaled from a related GPU or model",
        "unknown": "no figure for this GPU: a wide guess",
    }[basis]
    certainty = f"±{uncertainty:.0%}: {certainty}"

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
        cost = (
            (total[0] + setup[0]) / 60 * price[0],
            (total[1] + setup[1]) / 60 * price[1],
        )
        source = provider["source"]
        if price_basis == "scaled":
            source += "; carried over from its RTX 4090 price by the guide's typical-rate ratio"
        costs.append(ProviderCost(name, provider["label"], price, setup, cost, price_basis, source))
    costs.sort(key=lambda c: c.cost[0])
    return Estimate(
        model=model,
        gpu=info.name,
        gpu_label=info.label,
        vram_gb=info.vram_gb,
        images=images,
        images_x_repeats=seen_per_epoch,
        epochs=epochs,
        batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        resolution=resolution,
        steps_per_epoch=per_epoch,
        steps=steps,
        train_minutes=(train[0], train[1]),
        overhead_minutes=(overhead[0], overhead[1]),
        total_minutes=total,
        memory_gb=memory_out,
        fits=fits,
        basis=basis,
        uncertainty=uncertainty,
        certainty=certainty,
        sources=tuple(sources),
        costs=tuple(costs),
        own_price_per_hour=own_price_per_hour,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class DatasetCounts:
    images: int
    images_x_repeats: int
    steps_per_epoch: int | None  # bucket-aware when the dataset check provides it
    kind: str  # "train_dir" or "image_folder"


def count_dataset(
    path: str | Path, *, model: str = "sd15", batch_size: int = 1, repeats: int | None = None
) -> DatasetCounts:
    """Images and images x repeats of a dataset folder (kohya N_name/ layout or plain images).

    A plain folder of images counts with `repeats`, by default the repeats `kohyagen run`
    (dataset prepare's "auto") would give it. Raises DatasetError for an unusable folder.
    """
    from kohyagen.dataset.check import check_dataset

    report = check_dataset(path, model=model, batch_size=batch_size)
    if report.kind == "train_dir":
        return DatasetCounts(
            report.image_count, report.images_x_repeats, report.steps_per_epoch, report.kind
        )
    if not report.image_count:
        from kohyagen.errors import DatasetError

        raise DatasetError(
            "no images found", path=path, hint="pass a folder of images or of N_name/ folders"
        )
    if repeats is None:
        from kohyagen.dataset.prepare import auto_repeats

        repeats = auto_repeats(report.image_count)
    return DatasetCounts(report.image_count, report.image_count * repeats, None, report.kind)
