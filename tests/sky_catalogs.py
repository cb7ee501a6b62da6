"""SkyPilot catalog files as SkyPilot 0.14.1 writes them, for tests that read them.

Column names and orders: sky/catalog/data_fetchers/fetch_runpod.py (USEFUL_COLUMNS, via
pandas' to_csv), fetch_vast.py (a csv.DictWriter over its mapped keys) and
fetch_lambda_cloud.py (a csv.writer); the cache is `<root>/.sky/catalogs/v8/<cloud>/vms.csv`.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

HOUR = 3600.0
TABLE_PRICE = 0.59  # RunPod's RTX 4090 in templates/providers.toml
RUNPOD_COLUMNS = [
    "InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "Region",
    "SpotPrice", "Price", "AvailabilityZone", "GpuInfo",
]  # fmt: skip
VAST_COLUMNS = [
    "InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "GpuInfo",
    "Price", "SpotPrice", "Region", "HostingType",
]  # fmt: skip
LAMBDA_COLUMNS = [
    "InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "Price",
    "Region", "GpuInfo", "SpotPrice",
]  # fmt: skip


def gpu_info(name: str, count: int, mib: int) -> str:
    # SkyPilot writes a Python dict literal (json.dumps with ' for "), quoted by csv
    return (
        f"{{'Gpus': [{{'Name': '{name}', 'Manufacturer': 'NVIDIA', 'Count': {count}, "
        f"'MemoryInfo': {{'SizeInMiB': {mib}}}}}], 'TotalGpuMemoryInMiB': {mib * count}}}"
    )


def runpod_row(gpu: str, count: int, region: str, zone: str, price, spot) -> list:
    return [f"{count}x_{gpu}_SECURE", gpu, float(count), 16.0 * count, 62.0, region, spot,
            price, zone, gpu_info(gpu, count, 24)]  # fmt: skip


def vast_row(gpu: str, count: int, region: str, price, spot) -> list:
    return [f"{count}x-{gpu}-16-64000", gpu, count, 16, 62.5, gpu_info(gpu, count, 24576),
            price, spot, region, 1]  # fmt: skip


RUNPOD = [
    runpod_row("RTX4090", 1, "CA", "CA-MTL-1", 0.74, 0.40),
    runpod_row("RTX4090", 1, "CZ", "EU-CZ-1", 0.69, 0.35),  # the cheapest region
    runpod_row("RTX4090", 2, "CZ", "EU-CZ-1", 1.38, 0.70),  # two GPUs: not this run's
    runpod_row("RTX3090", 1, "CA", "CA-MTL-1", 0.46, 0.22),
]
VAST = [
    vast_row("RTX4090", 1, "Quebec, CA", "0.52", "0.31"),  # a comma inside, quoted
    vast_row("RTX4090", 1, "Texas, US", "0.48", "0.29"),
]


def write_catalog(root: Path, cloud: str, columns: list[str], rows: list[list], *, age_s=HOUR):
    """cloud's vms.csv under root, as SkyPilot writes it, downloaded age_s ago."""
    path = root / ".sky" / "catalogs" / "v8" / cloud / "vms.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path
