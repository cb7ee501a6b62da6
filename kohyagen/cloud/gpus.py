"""kohyagen's GPU presets as SkyPilot accelerator names, and which clouds offer them.

SkyPilot checks GPU names only on its API server, against a catalog fetched at run time
(facts: skypilot-facts.md §4), so an unknown name would fail late, after the upload.
The table below is the facts file's snapshot of that catalog: each preset that a
rentable cloud offers, its SkyPilot name, and the clouds that list it. A preset not
here (rtx3060-12, rtx4080, h200, the generic NNgb sizes) is never offered as a
candidate. PrimeIntellect is left out on purpose: it has no autostop or autodown
(primeintellect.py:29-30 in SkyPilot 0.14.1), so a forgotten job would never stop.
"""

from __future__ import annotations

from dataclasses import dataclass

# The values of --cloud, as SkyPilot's `infra` names them; "any" lets SkyPilot choose.
CLOUDS = (
    "any",
    "runpod",
    "vast",
    "lambda",
    "aws",
    "gcp",
    "azure",
    "paperspace",
    "oci",
    "nebius",
    "cudo",
    "do",
    "seeweb",
    "hyperbolic",
)


@dataclass(frozen=True)
class SkyGpu:
    """One way to ask SkyPilot for a preset: the accelerator name and the clouds listing it."""

    preset: str
    accelerator: str
    clouds: frozenset[str]


def _gpu(preset: str, accelerator: str, clouds: str) -> SkyGpu:
    return SkyGpu(preset, accelerator, frozenset(clouds.split()))


# Snapshot from skypilot-facts.md §4 (SkyPilot's common/accelerators.csv). A preset may
# have two names: RTX A6000 is `RTXA6000` on RunPod/Vast/Cudo/Seeweb but `A6000` on Lambda.
SKY_GPUS: tuple[SkyGpu, ...] = (
    _gpu("rtx3090", "RTX3090", "runpod vast"),
    _gpu("rtx4090", "RTX4090", "runpod vast"),
    _gpu("rtx5090", "RTX5090", "vast runpod"),
    _gpu("a6000", "RTXA6000", "runpod vast cudo seeweb"),
    _gpu("a6000", "A6000", "lambda"),
    _gpu("l4", "L4", "aws gcp runpod seeweb"),
    _gpu("a10g", "A10G", "aws"),
    _gpu("a10g", "A10", "azure lambda oci"),
    _gpu("l40s", "L40S", "aws cudo oci runpod seeweb vast nebius"),
    _gpu("t4", "T4", "aws azure gcp"),
    _gpu("v100", "V100", "aws azure cudo gcp lambda oci paperspace vast"),
    _gpu("a100-40", "A100", "aws azure cudo gcp lambda oci seeweb vast"),
    _gpu("a100-80", "A100-80GB", "aws azure gcp lambda oci paperspace runpod"),
    _gpu(
        "h100",
        "H100",
        "aws azure do gcp hyperbolic lambda oci paperspace runpod seeweb vast nebius",
    ),
)


def offers(preset: str, cloud: str) -> list[tuple[str, str]]:
    """(accelerator, cloud) pairs that rent `preset` on `cloud`; "any": on every listed cloud.

    Each pair names its cloud, even for "any": left open, SkyPilot would also consider
    clouds outside this table (such as PrimeIntellect, which cannot tear itself down).
    """
    return sorted(
        (g.accelerator, c)
        for g in SKY_GPUS
        if g.preset == preset
        for c in g.clouds
        if cloud in ("any", c)
    )


def rentable_presets() -> list[str]:
    """The presets SkyPilot can rent somewhere, in table order, without repeats."""
    return list(dict.fromkeys(g.preset for g in SKY_GPUS))
