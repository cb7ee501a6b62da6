"""GPU rental prices by provider: the defaults in templates/providers.toml, then the
user's own prices.toml on top (same [providers.NAME] shape; see that template)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kohyagen.errors import ConfigError, PresetError
from kohyagen.estimate.throughput import (
    CPU,
    GpuInfo,
    Span,
    gpu_info,
    norm_name,
    parse_span,
    provider_data,
    read_toml,
    throughput_key,
)
from kohyagen.resources import template_path


def default_prices_path() -> Path:
    # the XDG base directory spec, as other CLI tools keep their settings
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
    # only a file the user named must exist; the default one is optional
    if path is None and not user_path.is_file():
        return table
    data = read_toml(user_path)
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
        # a user entry replaces the published one of the same name whole
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
        "setup_minutes": parse_span(
            entry.get("setup_minutes", 0), what=f"providers.{name}.setup_minutes", path=path
        ),
        "prices": {
            gpu: parse_span(value, what=f"providers.{name}.prices.{gpu}", path=path)
            for gpu, value in prices.items()
        },
        "source": str(entry.get("source", f"your prices file {path}" if user else "")),
        "user": user,
    }


def price_for(provider: dict[str, Any], gpu: GpuInfo) -> tuple[Span, str] | None:
    """The provider's hourly price for this GPU and how it was found."""
    # providers name cards their own way: match any of the GPU's names
    names = {norm_name(n) for n in (gpu.name, gpu.label, *gpu.aliases)}
    key = throughput_key(gpu.name, gpu.label, *gpu.aliases)
    if key:
        names.add(norm_name(key))
    for gpu_name, span in provider["prices"].items():
        if norm_name(gpu_name) in names:
            return span, "user" if provider["user"] else "published"
    # Carry the provider's RTX 4090 price over by the guide's typical-rate ratio.
    base = next((s for g, s in provider["prices"].items() if norm_name(g) == "rtx4090"), None)
    # no 4090 price to scale from, or nothing to rent
    if base is None or gpu.name == CPU:
        return None
    rates = provider_data()["typical_rates"]
    ratio = None
    if key in rates:
        ratio = rates[key] / rates["rtx4090"]
    elif gpu.price_per_hour:
        try:
            # no published 4090 price: 0 makes the ZeroDivisionError below, so no ratio
            ratio = gpu.price_per_hour / (gpu_info("rtx4090").price_per_hour or 0.0)
        except (PresetError, TypeError, ZeroDivisionError):
            ratio = None
    if ratio is None:
        return None
    return (base[0] * ratio, base[1] * ratio), "scaled"
