"""What a LoRA run will take before it starts: steps, wall time, VRAM fit, cost by provider.

The figures are data, not code: templates/throughput.toml holds the per-GPU and per-model
throughput, overhead and memory figures, templates/providers.toml the rental prices, each
with its source. The user's own prices (prices.toml, see load_prices) extend or replace
the provider table. Time is modelled as proportional to the number of images seen
(images x repeats x epochs), so a bigger batch means fewer but longer steps.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from kohyagen.errors import ConfigError, PresetError
from kohyagen.resources import template_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODELS = ("sd15", "sd2", "sdxl")
CPU = "cpu"
# How far off the range may be, by the kind of figure it rests on.
UNCERTAINTY = {"published": 0.30, "derived": 0.50, "unknown": 1.0}
# Above this share of the card's memory a run is "tight": it may OOM with a larger bucket.
TIGHT_SHARE = 0.9
DEFAULT_REPEATS = 10
DEFAULT_EPOCHS = 10

Span = tuple[float, float]


@dataclass(frozen=True)
class GpuInfo:
    """What the estimate needs to know about a GPU (from kohyagen.presets when available)."""

    name: str
    label: str
    vram_gb: float | None
    price_per_hour: float | None = None
    aliases: tuple[str, ...] = ()


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


# ---------------------------------------------------------------- data files


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError("file not found", path=path, hint="check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file: {exc}", path=path) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed TOML: {exc}", path=path, hint="fix the syntax") from exc


@cache
def throughput_data() -> dict[str, Any]:
    return _read_toml(template_path("throughput.toml"))


@cache
def provider_data() -> dict[str, Any]:
    return _read_toml(template_path("providers.toml"))


def _norm(name: str) -> str:
    return (
        re.sub(r"[\s_\-]+", "", name.strip().lower()).removeprefix("nvidia").removeprefix("geforce")
    )


def _span(value: Any, *, what: str, path: Path | None = None) -> Span:
    """A number or a [low, high] pair of non-negative numbers -> (low, high)."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, (int, float)):
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

# Used only when kohyagen.presets is not installed alongside (it is the real source of
# GPU facts); VRAM in GB of the cards throughput.toml knows.
_FALLBACK_VRAM = {
    "rtx3060-12": 12,
    "rtx3090": 24,
    "rtx4080": 16,
    "rtx4090": 24,
    "a6000": 48,
    "a10g": 24,
    "a100-40": 40,
    "a100-80": 80,
    "h100": 80,
    "l4": 24,
    "l40s": 48,
    "t4": 16,
    "rtx5090": 32,
    "v100": 16,
    "h200": 141,
}
_GENERIC = re.compile(r"^(\d+)\s*gb$", re.IGNORECASE)


def gpu_info(name: str) -> GpuInfo:
    """Resolve a GPU name (a kohyagen preset name, alias, or "24gb") to what we need.

    "cpu" is a GpuInfo with no VRAM: a run on this machine without a GPU.
    """
    if name.strip().lower() == CPU:
        return GpuInfo(CPU, "CPU (no GPU)", None)
    try:
        from kohyagen import presets
    except ImportError:
        presets = None
    if presets is not None:
        preset = presets.get_gpu(name)
        return GpuInfo(
            preset.name,
            preset.label,
            float(preset.vram_gb),
            getattr(preset, "price_per_hour", None),
            tuple(getattr(preset, "aliases", ()) or ()),
        )
    key = _throughput_key(name)
    if key in _FALLBACK_VRAM:
        return GpuInfo(key, key, float(_FALLBACK_VRAM[key]))
    generic = _GENERIC.match(name.strip())
    if generic:
        return GpuInfo(name.lower(), f"a {generic.group(1)} GB GPU", float(generic.group(1)))
    raise PresetError(
        f"unknown GPU {name!r}",
        hint="use one of: " + ", ".join(sorted(_FALLBACK_VRAM)) + ", or NNgb (e.g. 24gb)",
    )


def _throughput_key(*names: str) -> str | None:
    gpus = throughput_data()["gpus"]
    wanted = {_norm(n) for n in names if n}
    for key, entry in gpus.items():
        known = {_norm(key), *(_norm(a) for a in entry.get("aliases", []))}
        if known & wanted:
            return key
    return None


def _gpu_minutes(gpu: GpuInfo) -> tuple[Span, str, list[str]]:
    """Minutes of the reference workload on this GPU, its basis, and the chain of sources."""
    data = throughput_data()
    key = _throughput_key(gpu.name, gpu.label, *gpu.aliases)
    entry = data["gpus"][key] if key else data["unknown_gpu"]
    sources = [f"{gpu.label if key else 'unknown GPU'}: {entry['source']}"]
    factor: Span = (1.0, 1.0)
    basis = entry["basis"] if key else "unknown"
    while "minutes" not in entry:
        f = _span(entry["factor"], what="factor")
        factor = (factor[0] * f[0], factor[1] * f[1])
        base_key = entry["scaled_from"]
        entry = data["gpus"][base_key]
        sources.append(f"{base_key}: {entry['source']}")
    minutes = _span(entry["minutes"], what="minutes")
    return (minutes[0] * factor[0], minutes[1] * factor[1]), basis, sources


# ---------------------------------------------------------------- prices


def default_prices_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kohyagen" / "prices.toml"


def load_prices(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The provider table: defaults from providers.toml, then the user's file on top.

    path None reads default_prices_path() when it exists. Each provider is
    {label, setup_minutes: Span, prices: {gpu: Span}, source, user: bool}.
    """
    table: dict[str, dict[str, Any]] = {}
    for name, entry in provider_data()["providers"].items():
        table[name] = _provider(name, entry, user=False, path=template_path("providers.toml"))
    user_path = Path(path) if path is not None else default_prices_path()
    if path is None and not user_path.is_file():
        return table
    data = _read_toml(user_path)
    providers = data.get("providers")
    if not isinstance(providers, dict) or not providers:
        raise ConfigError(
            "no [providers.NAME] tables found",
            path=user_path,
            hint="write e.g. [providers.myhost] with prices = { rtx4090 = 0.45 }",
        )
    for name, entry in providers.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"providers.{name} must be a table", path=user_path)
        table[name] = _provider(name, entry, user=True, path=user_path)
    return table


def _provider(name: str, entry: dict[str, Any], *, user: bool, path: Path) -> dict[str, Any]:
    prices = entry.get("prices")
    if not isinstance(prices, dict) or not prices:
        raise ConfigError(
            f"providers.{name} has no prices table",
            path=path,
            hint=f"add prices = {{ rtx4090 = 0.45 }} under [providers.{name}]",
        )
    return {
        "label": str(entry.get("label", name)),
        "setup_minutes": _span(
            entry.get("setup_minutes", 0), what=f"providers.{name}.setup_minutes", path=path
        ),
        "prices": {
            gpu: _span(value, what=f"providers.{name}.prices.{gpu}", path=path)
            for gpu, value in prices.items()
        },
        "source": str(entry.get("source", f"your prices file {path}" if user else "")),
        "user": user,
    }


def _price_for(provider: dict[str, Any], gpu: GpuInfo) -> tuple[Span, str] | None:
    """The provider's hourly price for this GPU and how it was found."""
    names = {_norm(n) for n in (gpu.name, gpu.label, *gpu.aliases)}
    key = _throughput_key(gpu.name, gpu.label, *gpu.aliases)
    if key:
        names.add(_norm(key))
    for gpu_name, span in provider["prices"].items():
        if _norm(gpu_name) in names:
            return span, "user" if provider["user"] else "published"
    # Carry the provider's RTX 4090 price over by the guide's typical-rate ratio.
    base = next((s for g, s in provider["prices"].items() if _norm(g) == "rtx4090"), None)
    if base is None or gpu.name == CPU:
        return None
    rates = provider_data()["typical_rates"]
    ratio = None
    if key in rates:
        ratio = rates[key] / rates["rtx4090"]
    elif gpu.price_per_hour:
        try:
            ratio = gpu.price_per_hour / gpu_info("rtx4090").price_per_hour
        except (PresetError, TypeError, ZeroDivisionError):
            ratio = None
    if ratio is None:
        return None
    return (base[0] * ratio, base[1] * ratio), "scaled"


# ---------------------------------------------------------------- the estimate


def steps_for(images_x_repeats: int, *, epochs: int, batch_size: int, grad_accum: int = 1) -> int:
    """kohya's optimizer steps: ceil(images x repeats / batch) per epoch, / accumulation."""
    per_epoch = math.ceil(images_x_repeats / batch_size)
    return math.ceil(per_epoch / grad_accum) * epochs


def memory_needed(
    model: str,
    *,
    batch_size: int,
    resolution: int,
    gradient_checkpointing: bool = False,
    optimizer: str | None = None,
    unet_only: bool | None = None,
) -> float:
    """GPU memory in GB of a LoRA run. kohyagen.presets' VRAM model when it is installed
    (the same one that chose the batch size), else the figures in throughput.toml; the
    per-sample part scales with the pixel count against the model's native resolution."""
    native = throughput_data()["models"][model]["native_resolution"]
    scale = (resolution / native) ** 2
    try:
        from kohyagen import presets
    except ImportError:
        presets = None
    if presets is not None:
        preset = presets.get_model(model)
        kwargs = {
            "gradient_checkpointing": gradient_checkpointing,
            "optimizer": optimizer or "AdamW8bit",
            "unet_only": unet_only,
        }
        base = presets.memory_need(preset, batch_size=0, **kwargs)
        per_sample = presets.memory_need(preset, batch_size=1, **kwargs) - base
        return round(base + per_sample * scale * batch_size, 1)
    mem = throughput_data()["memory"][model]
    per_sample = mem["per_sample_gb"] * scale
    if gradient_checkpointing:
        per_sample *= mem["checkpointing_factor"]
    return round(mem["base_gb"] + per_sample * batch_size, 1)


def _memory_source(model: str) -> str:
    try:
        from kohyagen import presets  # noqa: F401
    except ImportError:
        return throughput_data()["memory"][model]["source"]
    return "kohyagen's VRAM model (templates/presets/models.toml)"


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
    sources = [f"memory ({model}): {_memory_source(model)}"]
    if info.vram_gb is None:
        fits = "unknown"
        memory_out: float | None = None
    else:
        memory_out = memory
        fits = (
            "yes"
            if memory <= TIGHT_SHARE * info.vram_gb
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
    gpu_minutes, basis, gpu_sources = _gpu_minutes(info)
    model_factor = _span(model_data["time_factor"], what="time_factor")
    if model_data["basis"] != "published" and basis == "published":
        basis = "derived"
    pixel_scale = (resolution / model_data["native_resolution"]) ** 2
    seen_total = seen_per_epoch * epochs
    train = tuple(
        m / ref_seen * seen_total * f * pixel_scale
        for m, f in zip(gpu_minutes, model_factor, strict=True)
    )
    overhead_data = data["overhead"][model]
    startup = _span(overhead_data["startup_seconds"], what="startup_seconds")
    per_image = _span(overhead_data["seconds_per_image"], what="seconds_per_image")
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
        "published": "from published figures for this GPU",
        "derived": "scaled from a related GPU or model",
        "unknown": "no figure for this GPU: a wide guess",
    }[basis]
    certainty = f"±{uncertainty:.0%}: {certainty}"

    table = prices if prices is not None else load_prices()
    costs: list[ProviderCost] = []
    for name, provider in table.items():
        found = _price_for(provider, info)
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
    path: str | Path, *, model: str = "sd15", batch_size: int = 1, repeats: int = DEFAULT_REPEATS
) -> DatasetCounts:
    """Images and images x repeats of a dataset folder (kohya N_name/ layout or plain images).

    A plain folder of images is counted with `repeats`, as prepare would lay it out.
    """
    try:
        from kohyagen.dataset import check_dataset
    except ImportError:
        check_dataset = None
    if check_dataset is not None:
        report = check_dataset(path, model=model, batch_size=batch_size)
        if report.kind == "train_dir":
            return DatasetCounts(
                report.image_count, report.images_x_repeats, report.steps_per_epoch, report.kind
            )
        return DatasetCounts(report.image_count, report.image_count * repeats, None, report.kind)
    from kohyagen.errors import DatasetError
    from kohyagen.layout import list_images, scan_train_dir

    layout = scan_train_dir(path)
    if layout.subsets:
        return DatasetCounts(layout.image_count, layout.images_x_repeats, None, "train_dir")
    images = list_images(Path(path))
    if not images:
        raise DatasetError(
            "no images found", path=path, hint="pass a folder of images or of N_name/ folders"
        )
    return DatasetCounts(len(images), len(images) * repeats, None, "image_folder")
