"""GPU prices from SkyPilot's own catalog, as already cached on this machine.

SkyPilot keeps each cloud's offers in `<root>/.sky/catalogs/v8/<cloud>/vms.csv`, where the
root is $SKY_RUNTIME_DIR, else the home folder (sky/catalog/common.py and
skylet/runtime_utils.py in SkyPilot 0.14.1). It downloads a missing or stale file itself
with `requests.get` and no timeout (skypilot-facts.md §1.3), so kohyagen never triggers
that: it only reads the files that are there, with the standard library (no pandas, no
`import sky`), and works without the [cloud] extra. A missing, unreadable, oversized or
malformed file, or a row with no sensible price, gives no catalog price: never an error.

The file (data_fetchers/fetch_runpod.py, fetch_vast.py, fetch_lambda_cloud.py): a header
row naming the columns, whose order differs from cloud to cloud, then one row per
instance type and region (and zone). Price is the on-demand dollars per hour of the whole
instance, SpotPrice the spot one (empty where a cloud has none, as on Lambda). SkyPilot
matches an accelerator name case-insensitively and a count within 0.01
(common.get_instance_type_for_accelerator_impl), then takes the cheapest row over the
regions (common.get_hourly_cost_impl); this module does the same for one GPU.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from kohyagen import safe_io

# constants.CATALOG_SCHEMA_VERSION of SkyPilot 0.14.1: a new schema gets a new folder
CATALOG_VERSION = "v8"
# SkyPilot refreshes RunPod's, Lambda's and the big clouds' files every 7 hours when it
# is used, but Vast's never (vast_catalog.py:19): a week-old file is worth a warning.
STALE_AFTER_S = 7 * 24 * 3600.0
# AWS's vms.csv, the largest, is a few MB; anything far above is not a catalog.
CSV_LIMIT = 64 * 1024 * 1024
NAME, COUNT, PRICE, SPOT = "AcceleratorName", "AcceleratorCount", "Price", "SpotPrice"


@dataclass(frozen=True)
class CloudPrices:
    """The cheapest one-GPU offers in one cloud's cached file, by upper-cased accelerator."""

    cloud: str
    modified: float  # the file's mtime: SkyPilot's last download (or failed refresh)
    on_demand: Mapping[str, float]
    spot: Mapping[str, float]


@dataclass(frozen=True)
class CatalogPrice:
    """The price SkyPilot's cache gives for a GPU: the cheapest of the clouds asked."""

    price: float
    cloud: str
    accelerator: str
    spot: bool
    age_s: float

    @property
    def stale(self) -> bool:
        return self.age_s > STALE_AFTER_S

    @property
    def source(self) -> str:
        """e.g. "SkyPilot catalog (runpod, on-demand), cached 3 h ago"."""
        kind = "spot" if self.spot else "on-demand"
        text = f"SkyPilot catalog ({self.cloud}, {kind}), cached {describe_age(self.age_s)}"
        # still the best figure there is, but the reader should know it may have moved
        return text + ("; old, prices may have changed since" if self.stale else "")


def describe_age(seconds: float) -> str:
    """An age as a person says it: "just now", "25 min ago", "3 h ago", "9 days ago"."""
    minutes = max(0.0, seconds) / 60
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes:.0f} min ago"
    if minutes < 48 * 60:
        return f"{minutes / 60:.0f} h ago"
    return f"{minutes / (24 * 60):.0f} days ago"


def catalog_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where SkyPilot keeps its catalogs; RuntimeError when there is no home folder."""
    env = os.environ if environ is None else environ
    # SkyPilot: os.path.expanduser(os.environ.get('SKY_RUNTIME_DIR', '~')); an empty
    # value is taken as unset here, not as the current folder
    root = env.get("SKY_RUNTIME_DIR")
    base = Path(root).expanduser() if root else Path.home()
    return base / ".sky" / "catalogs" / CATALOG_VERSION


def _price(text: str) -> float | None:
    """A cell as dollars an hour: a finite number above zero, else None (empty, NaN,
    negative, zero: a free GPU is a broken row, and would disarm the budget guard)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _keep(table: dict[str, float], name: str, price: float | None) -> None:
    if price is not None and price < table.get(name, math.inf):
        table[name] = price


def _cell(row: list[str], index: Mapping[str, int], column: str) -> str:
    at = index.get(column)
    # a short row (a truncated file) has no value in the columns past its end
    return row[at] if at is not None and at < len(row) else ""


def _cheapest(rows: Iterator[list[str]]) -> tuple[dict[str, float], dict[str, float]] | None:
    """The cheapest Price and SpotPrice of every accelerator offered one at a time;
    None when the header lacks the columns a price needs."""
    header = next(rows, None)
    index = {name.strip(): i for i, name in enumerate(header or [])}
    if any(column not in index for column in (NAME, COUNT, PRICE)):
        return None
    on_demand: dict[str, float] = {}
    spot: dict[str, float] = {}
    for row in rows:
        name = _cell(row, index, NAME).strip().upper()
        count = _price(_cell(row, index, COUNT))
        if not name or count is None or abs(count - 1) > 0.01:
            continue
        _keep(on_demand, name, _price(_cell(row, index, PRICE)))
        _keep(spot, name, _price(_cell(row, index, SPOT)))
    return on_demand, spot


def read_cloud(cloud: str, root: Path) -> CloudPrices | None:
    """The cheapest one-GPU prices in cloud's cached vms.csv under root, or None."""
    path = root / cloud / "vms.csv"
    try:
        # safe_io: a FIFO or a device in the file's place is refused, not waited on
        fd, st = safe_io.open_fd(path)
        try:
            data = b"" if st.st_size > CSV_LIMIT else safe_io.read_fd(fd, st.st_size, CSV_LIMIT)
        finally:
            os.close(fd)
        if not data or len(data) > CSV_LIMIT:
            return None
        found = _cheapest(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    except (OSError, UnicodeDecodeError, csv.Error):
        # csv.Error: a field over csv's size limit, a stray quote in strict places
        return None
    if found is None:
        return None
    return CloudPrices(cloud, st.st_mtime, found[0], found[1])


def load_catalogs(clouds: Iterable[str], root: Path | None = None) -> dict[str, CloudPrices]:
    """The cached catalogs of these clouds that can be read, by cloud; never downloads."""
    try:
        base = root if root is not None else catalog_dir()
    except RuntimeError:
        return {}  # no home folder, so no SkyPilot cache either
    found: dict[str, CloudPrices] = {}
    for cloud in dict.fromkeys(clouds):
        prices = read_cloud(cloud, base)
        if prices is not None:
            found[cloud] = prices
    return found


def catalog_price(
    catalogs: Mapping[str, CloudPrices],
    pairs: Iterable[tuple[str, str]],
    *,
    spot: bool = False,
    now: float | None = None,
) -> CatalogPrice | None:
    """The cheapest cached price of these (accelerator, cloud) offers, one GPU each.

    With spot, the cheapest spot price; where no cloud lists one, the on-demand price
    (its source says so): an upper bound still closer than kohyagen's own table.
    """
    pairs = list(pairs)
    clock = time.time() if now is None else now
    for want_spot in (True, False) if spot else (False,):
        best: CatalogPrice | None = None
        for accelerator, cloud in pairs:
            prices = catalogs.get(cloud)
            table = (prices.spot if want_spot else prices.on_demand) if prices else {}
            price = table.get(accelerator.upper())
            if prices is None or price is None or (best is not None and price >= best.price):
                continue
            age = max(0.0, clock - prices.modified)  # a file from the future: a skewed clock
            best = CatalogPrice(price, cloud, accelerator, want_spot, age)
        if best is not None:
            return best
    return None
