"""How long training takes: seconds per step from the throughput figures, or the user's
own measured runs, scaled by model, pixels, batch and the DiT families' memory levers,
plus the fixed startup and per-image overhead.

Separate from plan.py, which assembles the whole estimate (steps, memory fit, cost) and
only asks this module for the minutes and the sources they rest on.
"""

from __future__ import annotations

from dataclasses import dataclass

from kohyagen.config.presets import fit_params
from kohyagen.errors import PresetError
from kohyagen.estimate.throughput import (
    CPU,
    GpuInfo,
    Span,
    gpu_seconds,
    parse_span,
    throughput_data,
)


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


@dataclass(frozen=True)
class Levers:
    """What the run's settings do to its speed and memory (the DiT families' fp8 and
    blocks_to_swap from kohyagen's planner for this GPU)."""

    fp8: bool = False
    blocks_to_swap: int = 0
    gradient_checkpointing: bool = False
    note: str | None = None


def levers_for(model: str, info: GpuInfo) -> Levers:
    """fp8 and blocks_to_swap as `kohyagen config` would set them for a DiT family here."""
    from kohyagen.config.family_settings import dit_plan
    from kohyagen.config.presets import get_gpu, get_model

    preset = get_model(model)
    if preset.family is None or info.name == CPU:
        return Levers()
    try:
        plan = dit_plan(preset, get_gpu(info.name))
    except PresetError as exc:
        return Levers(note=f"{exc.message} ({exc.hint})")
    return Levers(plan.fp8, plan.blocks_to_swap, plan.gradient_checkpointing)


def _step_factor(model: str, batch: int, gc: bool, levers: Levers) -> float:
    """One step's time relative to a batch-1 step without checkpointing (the presets'
    model: fixed per-step cost plus per-sample cost; fp8 upcasts; swapped blocks)."""
    fit = fit_params()
    factor = fit.step_overhead + batch * (1.0 - fit.step_overhead)
    factor *= fit.gc_slowdown if gc else 1.0
    if levers.fp8 or levers.blocks_to_swap:
        from kohyagen.config.presets import get_model

        family = get_model(model).family
        assert family is not None  # fp8 and block swapping are DiT levers
        mem = family.memory
        factor *= mem.fp8_slowdown if levers.fp8 else 1.0
        factor += levers.blocks_to_swap * mem.swap_slowdown * (mem.fp8_factor if levers.fp8 else 1)
    return factor


def train_minutes(
    model: str, info: GpuInfo, resolution: int, batch: int, gc: bool, micro_steps: int,
    seen_total: int, levers: Levers, use_measured: bool, sources: list[str], notes: list[str],
) -> tuple[Span, str]:  # fmt: skip
    model_data = throughput_data()["models"][model]
    seconds, basis, gpu_sources = gpu_seconds(info)
    factor = parse_span(model_data["time_factor"], what="time_factor")
    if model_data["basis"] != "published" and basis == "published":
        basis = "derived"
    pixel_scale = (resolution / model_data["native_resolution"]) ** 2
    step = _step_factor(model, batch, gc, levers) * pixel_scale
    train = tuple(s * f * step * micro_steps / 60 for s, f in zip(seconds, factor, strict=True))
    measured = _measured_minutes(info.name, model, resolution, seen_total) if use_measured else None
    if measured is not None:
        train, basis, measured_source = measured
        gpu_sources = [measured_source]
    ref = throughput_data()["reference"]
    sources += [
        f"unit: {ref['unit']} of a {ref['model']} LoRA at {ref['resolution']} px, batch "
        f"{ref['batch_size']}, on the GPU below",
        *gpu_sources,
        f"model {model}: {model_data['source']}",
    ]
    low, high = train[0] * 60 / micro_steps, train[1] * 60 / micro_steps
    notes.append(f"about {low:.2g}-{high:.2g} s per step at batch {batch}")
    if pixel_scale != 1:
        notes.append(
            f"time scaled by the pixel count: {resolution} px vs {model}'s native "
            f"{model_data['native_resolution']} px (x{pixel_scale:.2f})"
        )
    return (train[0], train[1]), basis


def overhead_minutes(model: str, images: int, sources: list[str]) -> Span:
    overheads = throughput_data()["overhead"]
    key = model if model in overheads else "dit"
    data = overheads[key]
    startup = parse_span(data["startup_seconds"], what="startup_seconds")
    per_image = parse_span(data["seconds_per_image"], what="seconds_per_image")
    sources.append(f"overhead ({key}): {data['source']}")
    return ((startup[0] + images * per_image[0]) / 60, (startup[1] + images * per_image[1]) / 60)
