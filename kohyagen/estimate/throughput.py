"""Throughput, overhead and memory figures for estimates, and GPU lookup.

The figures are data: templates/throughput.toml, each with its source. GPU facts (name,
label, VRAM, typical price) come from kohyagen.config.presets; this module maps a GPU to the
throughput entry that describes it, following "scaled_from" chains to a published figure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from kohyagen import safe_io
from kohyagen.errors import ConfigError
from kohyagen.resources import template_path
from kohyagen.toml_compat import TOO_DEEP, tomllib

CPU = "cpu"
# every figure is a (low, high) span: estimates say how sure they are
Span = tuple[float, float]


@dataclass(frozen=True)
class GpuInfo:
    """What the estimate needs to know about a GPU (from kohyagen.config.presets when available)."""

    name: str
    label: str
    vram_gb: float | None
    price_per_hour: float | None = None
    aliases: tuple[str, ...] = ()


# ---------------------------------------------------------------- data files


def read_toml(path: Path) -> dict[str, Any]:
    try:
        # a prices file is the user's: a FIFO or /dev/zero must not hang the estimate
        return tomllib.loads(safe_io.read_text(path, safe_io.TOML_LIMIT))
    except FileNotFoundError as exc:
        raise ConfigError("file not found", path=path, hint="check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file: {exc}", path=path) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed TOML: {exc}", path=path, hint="fix the syntax") from exc
    except RecursionError:  # tomllib recurses per nesting level
        raise ConfigError(TOO_DEEP, path=path, hint="fix the syntax") from None


@cache
def throughput_data() -> dict[str, Any]:
    return read_toml(template_path("throughput.toml"))


@cache
def provider_data() -> dict[str, Any]:
    return read_toml(template_path("providers.toml"))


def norm_name(name: str) -> str:
    return (
        # `NVIDIA GeForce RTX 4090`, `rtx_4090` and `RTX-4090` are one card
        re.sub(r"[\s_\-]+", "", name.strip().lower()).removeprefix("nvidia").removeprefix("geforce")
    )


def parse_span(value: Any, *, what: str, path: Path | None = None) -> Span:
    """A number or a [low, high] pair of non-negative numbers -> (low, high)."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, (int, float)):
        # a single number is a span with no spread
        value = [value, value]
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and 0 <= value[0] <= value[1]
    ):
        return (float(value[0]), float(value[1]))
    raise ConfigError(
        f"{what} must be a number or a [low, high] pair with low <= high, got {value!r}",
        path=path,
        hint="e.g. 0.45 or [0.35, 0.60]",
    )


# ---------------------------------------------------------------- GPU lookup


def gpu_info(name: str) -> GpuInfo:
    """Resolve a GPU preset name or alias (kohyagen.config.presets, PresetError when unknown);
    "cpu" is a GpuInfo with no VRAM: a run on this machine without a GPU."""
    if name.strip().lower() == CPU:
        return GpuInfo(CPU, "CPU (no GPU)", None)
    from kohyagen.config.presets import get_gpu

    preset = get_gpu(name)
    return GpuInfo(
        preset.name,
        preset.label,
        float(preset.vram_gb),
        preset.price_per_hour,
        tuple(preset.aliases),
    )


def throughput_key(*names: str) -> str | None:
    gpus = throughput_data()["gpus"]
    wanted = {norm_name(n) for n in names if n}
    for key, entry in gpus.items():
        known = {norm_name(key), *(norm_name(a) for a in entry.get("aliases", []))}
        if known & wanted:
            return key
    return None


def gpu_seconds(gpu: GpuInfo) -> tuple[Span, str, list[str]]:
    """Seconds per step of the reference workload (SDXL LoRA, 1024 px, batch 1) on this GPU,
    its basis, and the chain of sources ("scaled_from" entries followed to a figure)."""
    data = throughput_data()
    key = throughput_key(gpu.name, gpu.label, *gpu.aliases)
    entry = data["gpus"][key] if key else data["unknown_gpu"]
    sources = [f"{gpu.label if key else 'unknown GPU'}: {entry['source']}"]
    factor: Span = (1.0, 1.0)
    basis = entry["basis"] if key else "unknown"
    # an unmeasured GPU is scaled from a measured one (and that maybe from another): the
    # factors multiply and every source on the way is named
    while "seconds" not in entry:
        f = parse_span(entry["factor"], what="factor")
        factor = (factor[0] * f[0], factor[1] * f[1])
        base_key = entry["scaled_from"]
        entry = data["gpus"][base_key]
        sources.append(f"{base_key}: {entry['source']}")
    seconds = parse_span(entry["seconds"], what="seconds")
    return (seconds[0] * factor[0], seconds[1] * factor[1]), basis, sources


def memory_needed(
    model: str,
    *,
    batch_size: int,
    resolution: int,
    gradient_checkpointing: bool = False,
    optimizer: str | None = None,
    unet_only: bool | None = None,
    fp8: bool = False,
    blocks_to_swap: int = 0,
) -> float:
    """GPU memory in GB of a LoRA run, from kohyagen.config.training_plan's VRAM model (the
    one that chose the batch size); the per-sample part scales with the pixel count against
    the model's native resolution. fp8 and blocks_to_swap are the DiT families' levers."""
    from kohyagen.config import presets
    from kohyagen.config.training_plan import memory_need

    native = throughput_data()["models"][model]["native_resolution"]
    # activation memory grows with the pixel count, the square of the side
    scale = (resolution / native) ** 2
    preset = presets.get_model(model)
    kwargs: dict[str, Any] = {
        "gradient_checkpointing": gradient_checkpointing,
        "optimizer": optimizer or "AdamW8bit",
        "unet_only": unet_only,
        "fp8_base": fp8,
        "blocks_to_swap": blocks_to_swap,
    }
    # batch 0 isolates the fixed part: weights, optimizer states, CUDA context
    base = memory_need(preset, batch_size=0, **kwargs)
    per_sample = memory_need(preset, batch_size=1, **kwargs) - base
    return round(base + per_sample * scale * batch_size, 1)


MEMORY_SOURCE = (
    "kohyagen's VRAM model (templates/presets/models.toml and families.toml, "
    "kohyagen.config.presets)"
)
