"""The DiT families kohya trains LoRAs for (FLUX.1, Chroma, SD3/3.5, Lumina 2, HunyuanImage
2.1, Anima): their data (templates/presets/families.toml) and their memory levers.

A DiT family has more ways to fit a card than SD's U-Net: fp8 weights (fp8_base, or
fp8_scaled for HunyuanImage), blocks_to_swap (DiT blocks kept on the CPU and copied in
when needed), batch size, gradient checkpointing and the optimizer. `plan_dit` tries
them all and keeps the fastest combination that fits; `dit_settings` turns it into
kohya options, each with the memory it saves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from typing import Any

from kohyagen.config.family import SCRIPT_FAMILY as ALL_SCRIPT_FAMILIES
from kohyagen.errors import PresetError

UNET_SCRIPTS = ("train_network", "sdxl_train_network")
# The preset whose levers a script's configs use: the DiT part of config.family's table
# (Chroma shares FLUX's script and limits).
SCRIPT_FAMILY = {s: f for s, f in ALL_SCRIPT_FAMILIES.items() if s not in UNET_SCRIPTS}


def family_of_script(script: str) -> str | None:
    return SCRIPT_FAMILY.get(script.removesuffix(".py"))


@dataclass(frozen=True)
class DitMemory:
    base_gb: float
    dit_gb: float
    fp8: str  # "fp8_base", "fp8_scaled" or "" (no fp8 mode)
    fp8_factor: float
    swap_unit_gb: float
    max_swap: int
    per_sample_gb: float
    per_sample_gc_gb: float
    adamw_extra_gb: float
    te_peak_gb: float
    te_fp8_hint: str
    swap_slowdown: float
    fp8_slowdown: float


@dataclass(frozen=True)
class ModelFile:
    role: str  # "dit", "t5xxl", ...
    option: str  # the kohya option that takes its path
    hub: str  # "owner/repo/path/in/repo" or "" when no public source is known


@dataclass(frozen=True)
class Family:
    """What a DiT family adds to a ModelPreset."""

    network_module: str
    files: tuple[ModelFile, ...]
    options: tuple[tuple[str, Any, str], ...]  # (key, value, reason)
    memory: DitMemory
    apps: str
    medium_memory: DitMemory | None = None  # SD3: the medium variants

    def file(self, role: str) -> ModelFile:
        return next(f for f in self.files if f.role == role)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(f.role for f in self.files)


def family_from_data(raw: dict[str, Any]) -> Family:
    files = tuple(ModelFile(role, option, hub) for role, (option, hub) in raw["files"].items())
    options = tuple((key, value, reason) for key, (value, reason) in raw["options"].items())
    medium = raw.get("medium_memory")
    return Family(
        network_module=raw["network_module"],
        files=files,
        options=options,
        memory=DitMemory(**raw["memory"]),
        apps=raw["apps"],
        medium_memory=DitMemory(**medium) if medium else None,
    )


@dataclass(frozen=True)
class DitPlan:
    batch_size: int
    gradient_checkpointing: bool
    optimizer: str
    fp8: bool
    blocks_to_swap: int
    need_gb: float
    budget_gb: float
    throughput: float
    te_fits: bool  # the text encoders fit while kohya caches their outputs


def dit_need(
    mem: DitMemory,
    *,
    batch_size: int,
    gradient_checkpointing: bool,
    optimizer: str = "AdamW8bit",
    fp8: bool = False,
    blocks_to_swap: int = 0,
) -> float:
    """VRAM in GB of a DiT LoRA run with these levers (the formula in families.toml)."""
    factor = mem.fp8_factor if fp8 else 1.0
    per_sample = mem.per_sample_gc_gb if gradient_checkpointing else mem.per_sample_gb
    need = mem.base_gb + (mem.dit_gb - blocks_to_swap * mem.swap_unit_gb) * factor
    need += batch_size * per_sample
    if optimizer == "AdamW":
        need += mem.adamw_extra_gb
    return round(need, 2)


def _speed(mem: DitMemory, batch: int, base: float, fp8: bool, swap: int) -> float:
    """Relative images per second. base is the U-Net model's throughput for this batch,
    checkpointing and optimizer; fp8 upcasts slow every step by a factor, while swapped
    blocks cost a fixed time per step (their weights cross PCIe, fp8 ones at half size)."""
    step = batch / base * (mem.fp8_slowdown if fp8 else 1.0)
    step += swap * mem.swap_slowdown * (mem.fp8_factor if fp8 else 1.0)
    return batch / step


def plan_dit(
    mem: DitMemory,
    budget: float,
    batches: list[int],
    throughput_of: Callable[[int, bool, str], float],
) -> DitPlan | None:
    """The fastest fitting combination of fp8, blocks_to_swap, batch, checkpointing and
    optimizer; None when nothing fits. throughput_of(batch, gc, optimizer) is the
    relative speed of the U-Net presets' model (kohyagen.config.training_plan)."""
    fp8_options = (False, True) if mem.fp8 else (False,)
    best: DitPlan | None = None
    for fp8, batch, gc, opt in product(fp8_options, batches, (False, True), ("AdamW", "AdamW8bit")):
        swap = _fewest_swaps(mem, budget, batch, gc, opt, fp8)
        # kohya's recipes swap blocks at batch 1 only; kohyagen does not trade them for an
        # unmeasured recipe that swaps more to fit a bigger batch.
        if swap is None or (swap and batch > 1):
            continue
        need = dit_need(
            mem, batch_size=batch, gradient_checkpointing=gc, optimizer=opt, fp8=fp8,
            blocks_to_swap=swap,
        )  # fmt: skip
        speed = _speed(mem, batch, throughput_of(batch, gc, opt), fp8, swap)
        plan = DitPlan(batch, gc, opt, fp8, swap, need, budget, speed, mem.te_peak_gb <= budget)
        if best is None or (plan.throughput, -plan.need_gb) > (best.throughput, -best.need_gb):
            best = plan
    return best


def _fewest_swaps(
    mem: DitMemory, budget: float, batch: int, gc: bool, opt: str, fp8: bool
) -> int | None:
    for swap in range(mem.max_swap + 1):
        need = dit_need(
            mem, batch_size=batch, gradient_checkpointing=gc, optimizer=opt, fp8=fp8,
            blocks_to_swap=swap,
        )  # fmt: skip
        if need <= budget:
            return swap
    return None


def smallest_need(mem: DitMemory) -> float:
    """The least memory any setting needs: batch 1, checkpointing, 8-bit, fp8, all swapped."""
    return dit_need(
        mem, batch_size=1, gradient_checkpointing=True, fp8=bool(mem.fp8),
        blocks_to_swap=mem.max_swap,
    )  # fmt: skip


def no_fit_error(
    label: str, gpu_name: str, vram: float, budget: float, need: float, fits: str
) -> PresetError:
    hint = f"the smallest GPU preset it fits is {fits} (--gpu {fits})" if fits else ""
    return PresetError(
        f"{label} LoRA training does not fit on {gpu_name} ({vram:g} GB): even batch 1 with "
        f"gradient checkpointing, AdamW8bit, fp8 weights and the most blocks swapped needs "
        f"about {need:g} GB of the {budget:g} GB usable",
        hint=hint or "choose a GPU with more memory",
    )
