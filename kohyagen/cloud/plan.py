"""What renting will cost: the GPU alternatives whose memory fits, and price x estimate.

A run's configs are rendered for one GPU preset (batch size, precision, optimizer). Any
other rentable GPU runs the same configs unchanged when the memory model of
kohyagen.config.presets says they fit in its usable memory and it has the hardware the
configs use (bf16, fp8). Each alternative's time comes from kohyagen.estimate (its own
throughput figures), its price from SkyPilot's own catalog where this machine has it
cached (kohyagen.cloud.catalog: what SkyPilot will actually rent at), else from
kohyagen.estimate.prices (the provider table and the user's prices.toml), else the
preset's typical price; each candidate names its price's source. The guard holds the
most expensive alternative against --budget, since SkyPilot may pick any of them.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kohyagen.cloud.catalog import CloudPrices, catalog_price, load_catalogs
from kohyagen.cloud.gpus import CLOUDS, offers, rentable_presets
from kohyagen.errors import BudgetExceeded, PresetError, RunStateError, UsageError

Span = tuple[float, float]
# Minutes billed besides training, low..high. Provisioning comes from the provider
# table when it knows the cloud; these are kohyagen's assumptions otherwise.
PROVISION_MINUTES: Span = (3.0, 10.0)
INSTALL_MINUTES: Span = (3.0, 8.0)  # pip install kohyagen (+ sd-scripts' requirements)
COPY_MINUTES: Span = (0.5, 2.0)  # rsync of checkpoints, logs and report back
# --cloud value -> the provider key of kohyagen's price table (templates/providers.toml)
PROVIDER_KEYS = {"vast": "vastai"}
# An alternative GPU is offered only when its expected cost stays within this factor of
# the chosen preset's: SkyPilot rents the cheapest *hourly* offer, and a slow cheap card
# (an L4 for an SDXL LoRA) can cost more in total than the card that was asked for.
ALTERNATIVE_COST_FACTOR = 1.5
DEFAULT_IDLE_MINUTES = 10
DEFAULT_DISK_GB = 100


def check_amount(value: float | None, option: str) -> None:
    """A price or budget must be a finite, non-negative number of dollars."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{option} must be a number of dollars, got {value!r}", hint="e.g. 3")
    if value < 0:
        raise UsageError(f"{option} must not be negative, got {value:g}", hint="e.g. 3")


def cluster_name(name: str, run_dir: Path) -> str:
    """A name SkyPilot accepts ([a-z]([-a-z0-9]*[a-z0-9])?, constants.py:569) that is the
    same every time for this run folder and differs between two runs of one LoRA name."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "run"
    digest = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:6]
    return f"kohyagen-{slug}-{digest}"


@dataclass(frozen=True)
class Candidate:
    preset: str
    label: str
    vram_gb: float
    offers: tuple[tuple[str, str], ...]  # (SkyPilot accelerator, cloud)
    price_per_hour: float  # the high end of what kohyagen knows
    price_source: str  # e.g. "SkyPilot catalog (runpod, on-demand), cached 3 h ago"
    minutes: Span  # billed: provisioning + install + training + copy back
    cost: Span


@dataclass(frozen=True)
class CloudPlan:
    run_dir: Path
    name: str
    cluster: str
    model: str
    preset: str
    cloud: str
    spot: bool
    need_gb: float
    candidates: tuple[Candidate, ...]
    idle_minutes: int
    disk_gb: int
    max_price_per_hour: float | None
    budget: float | None

    @property
    def cost(self) -> Span:
        """Expected dollars: the cheapest low end .. the dearest high end of the candidates."""
        return (min(c.cost[0] for c in self.candidates), max(c.cost[1] for c in self.candidates))

    @property
    def idle_cost(self) -> float:
        """What the autodown window costs at most if kohyagen cannot take the cluster down."""
        return (self.idle_minutes + 1) / 60 * max(c.price_per_hour for c in self.candidates)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        data["cost"] = self.cost
        data["idle_cost"] = self.idle_cost
        return data


def _configs(manifest: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    configs = manifest.data.get("configs", {})
    if not manifest.is_finished("estimate") or not configs.get("values"):
        raise RunStateError(
            "this run has not been prepared up to its estimate",
            path=manifest.path,
            hint="prepare it with `kohyagen cloud run IMAGES ...` or `kohyagen run ... "
            "--prepare-only --gpu PRESET`",
        )
    return configs["values"], configs.get("resolved", {})


def fitting_presets(manifest: Any) -> tuple[float, list[str]]:
    """The memory the run needs (GB) and every rentable preset that runs its configs:
    the preset they were made for first, then the others in table order."""
    from kohyagen.config.presets import fit_params, get_gpu, get_model
    from kohyagen.config.training_plan import memory_need

    values, resolved = _configs(manifest)
    preset = get_gpu(manifest.data["configs"]["gpu"]).name
    fp8 = bool(resolved.get("fp8_base"))
    need = memory_need(
        get_model(manifest.data["inputs"]["model"]),
        batch_size=int(values["batch_size"]),
        gradient_checkpointing=bool(values["gradient_checkpointing"]),
        optimizer=values.get("optimizer") or "AdamW8bit",
        unet_only=bool(values["unet_only"]),
        fp8_base=fp8,
    )
    usable = fit_params().usable_fraction
    fitting = []
    for name in rentable_presets():
        gpu = get_gpu(name)
        if gpu.vram_gb * usable < need:
            continue
        if resolved.get("mixed_precision") == "bf16" and not gpu.bf16:
            continue  # kohya would fail at start: bf16 autocast needs Ampere or newer
        if fp8 and not gpu.fp8:
            continue
        fitting.append(name)
    return need, [preset] + [n for n in fitting if n != preset]


def hourly_price(
    preset: str, clouds: list[str], prices: dict[str, dict[str, Any]]
) -> tuple[Span, str, Span]:
    """The hourly price (low, high) of preset on the cheapest of these clouds that
    kohyagen has a price for, its source and that cloud's provisioning minutes; else the
    preset's typical price. SkyPilot rents the cheapest offer, so the high end bounds it."""
    from kohyagen.estimate.prices import price_for
    from kohyagen.estimate.throughput import gpu_info

    info = gpu_info(preset)
    known = []
    for cloud in dict.fromkeys(clouds):
        provider = prices.get(PROVIDER_KEYS.get(cloud, cloud))
        found = price_for(provider, info) if provider else None
        if found is not None and provider is not None:
            span, basis = found
            known.append((span, f"{provider['label']} ({basis})", provider["setup_minutes"]))
    if known:
        return min(known, key=lambda k: k[0][1])
    if info.price_per_hour is None:
        raise PresetError(f"no price known for {preset}", hint="add it to your prices.toml")
    typical = float(info.price_per_hour)
    return (typical, typical), "typical price of kohyagen's GPU presets", PROVISION_MINUTES


def offer_price(
    preset: str,
    pairs: list[tuple[str, str]],
    prices: dict[str, dict[str, Any]],
    catalogs: Mapping[str, CloudPrices],
    spot: bool = False,
) -> tuple[Span, str, Span]:
    """hourly_price's answer, unless SkyPilot's cached catalog prices one of these
    (accelerator, cloud) offers: then its cheapest, which is what SkyPilot rents at."""
    found = catalog_price(catalogs, pairs, spot=spot)
    if found is None:
        return hourly_price(preset, [c for _, c in pairs], prices)
    # the catalog knows prices, not how long the cloud takes to hand a machine over
    provider = prices.get(PROVIDER_KEYS.get(found.cloud, found.cloud))
    provision = provider["setup_minutes"] if provider else PROVISION_MINUTES
    return (found.price, found.price), found.source, provision


def _candidate(
    manifest: Any,
    preset: str,
    cloud: str,
    prices: dict[str, Any],
    catalogs: Mapping[str, CloudPrices],
    spot: bool,
) -> Candidate | None:
    from kohyagen.estimate.plan import estimate
    from kohyagen.estimate.throughput import gpu_info

    pairs = tuple(offers(preset, cloud))
    if not pairs:
        return None
    values, _ = _configs(manifest)
    est = estimate(
        model=manifest.data["inputs"]["model"],
        gpu=preset,
        images=int(manifest.outputs("check")["images"]),
        images_x_repeats=values.get("images_x_repeats")
        or manifest.data.get("estimate", {}).get("images_x_repeats"),
        epochs=int(values["epochs"]),
        batch_size=int(values["batch_size"]),
        resolution=int(values["resolution"]),
        steps_per_epoch=values.get("steps_per_epoch"),
        gradient_accumulation_steps=int(values["gradient_accumulation_steps"]),
        gradient_checkpointing=bool(values["gradient_checkpointing"]),
        optimizer=values.get("optimizer"),
        unet_only=bool(values["unet_only"]),
        prices={},
    )
    price, source, provision = offer_price(preset, list(pairs), prices, catalogs, spot)
    parts = (provision, INSTALL_MINUTES, est.total_minutes or (0.0, 0.0), COPY_MINUTES)
    minutes = (sum(p[0] for p in parts), sum(p[1] for p in parts))
    cost = (minutes[0] / 60 * price[0], minutes[1] / 60 * price[1])
    info = gpu_info(preset)
    return Candidate(
        preset, info.label, float(info.vram_gb or 0), pairs, price[1], source, minutes, cost
    )


def _within_cap(found: list[Candidate], max_price_per_hour: float | None) -> list[Candidate]:
    """The candidates at most --max-price-per-hour; BudgetExceeded when none is left.
    found[0] is the preset the configs were made for: the refusal names its price."""
    if max_price_per_hour is None:
        return found
    kept = [c for c in found if c.price_per_hour <= max_price_per_hour]
    if not kept:
        first = found[0]
        raise BudgetExceeded(
            f"no GPU that fits this run costs at most ${max_price_per_hour:.2f}/hour "
            f"({first.preset} is ${first.price_per_hour:.2f}, {first.price_source})",
            hint="raise --max-price-per-hour or give your prices with --prices",
        )
    return kept


def make_plan(
    manifest: Any,
    *,
    cloud: str = "any",
    spot: bool = False,
    max_price_per_hour: float | None = None,
    budget: float | None = None,
    idle_minutes: int = DEFAULT_IDLE_MINUTES,
    disk_gb: int = DEFAULT_DISK_GB,
    prices_file: Path | None = None,
) -> CloudPlan:
    """The GPU alternatives for a prepared run and what each costs (no cloud contacted)."""
    from kohyagen.estimate.prices import load_prices

    check_amount(max_price_per_hour, "--max-price-per-hour")
    check_amount(budget, "--budget")
    if cloud not in CLOUDS:
        raise UsageError(f"unknown cloud {cloud!r}", hint="one of: " + ", ".join(CLOUDS))
    if idle_minutes < 1 or disk_gb < 10:
        raise UsageError("--idle-minutes must be at least 1 and --disk at least 10 GB")
    need, presets = fitting_presets(manifest)
    prices = load_prices(prices_file)
    chosen = presets[0]
    if not offers(chosen, cloud):
        where = sorted({c for _, c in offers(chosen, "any")})
        raise PresetError(
            f"{chosen} is not offered on {cloud} (SkyPilot's catalog as kohyagen knows it)",
            hint=f"it is on: {', '.join(where) or 'no cloud kohyagen rents'}; pass --cloud "
            "any or another --gpu",
        )
    # read once per plan, only the clouds its candidates could be rented on
    catalogs = load_catalogs(c for p in presets for _, c in offers(p, cloud))
    found = [
        c
        for p in presets
        if (c := _candidate(manifest, p, cloud, prices, catalogs, spot)) is not None
    ]
    ceiling = found[0].cost[1] * ALTERNATIVE_COST_FACTOR
    found = _within_cap(
        found[:1] + [c for c in found[1:] if c.cost[1] <= ceiling], max_price_per_hour
    )
    run_dir = Path(manifest.run_dir)
    return CloudPlan(
        run_dir=run_dir,
        name=manifest.data["inputs"]["name"],
        cluster=cluster_name(manifest.data["inputs"]["name"], run_dir),
        model=manifest.data["inputs"]["model"],
        preset=chosen,
        cloud=cloud,
        spot=spot,
        need_gb=need,
        candidates=tuple(found),
        idle_minutes=idle_minutes,
        disk_gb=disk_gb,
        max_price_per_hour=max_price_per_hour,
        budget=budget,
    )


def check_budget(plan: CloudPlan) -> None:
    """Refuse a plan whose dearest alternative may cost more than --budget."""
    if plan.budget is None:
        return
    high = plan.cost[1]
    if high > plan.budget:
        dearest = max(plan.candidates, key=lambda c: c.cost[1])
        raise BudgetExceeded(
            f"renting may cost up to ${high:.2f} ({dearest.label} at "
            f"${dearest.price_per_hour:.2f}/hour for up to {dearest.minutes[1]:.0f} min), "
            f"above your budget of ${plan.budget:.2f}; nothing was rented",
            path=plan.run_dir,
            hint="raise --budget, cap the price with --max-price-per-hour, train fewer "
            "epochs, or choose a cheaper --gpu",
        )
