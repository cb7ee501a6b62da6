"""Which GPUs this machine has, and which kohyagen GPU preset fits each.

nvidia-smi is asked first (no Python GPU stack needed); when it is missing or fails,
torch.cuda is asked if torch is installed. A machine with neither sees no GPU, and the
result says why in plain words.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

CPU = "cpu"
_QUERY = "index,name,memory.total,memory.used,utilization.gpu"


@dataclass(frozen=True)
class DetectedGpu:
    index: int
    name: str
    vram_gb: float
    memory_used_gb: float | None = None
    utilization: float | None = None  # percent

    @property
    def busy(self) -> bool:
        """In use by something else: over 1 GB allocated or over 10% utilization."""
        # a desktop's display takes a few hundred MB: that is not `busy`
        return (self.memory_used_gb or 0) > 1.0 or (self.utilization or 0) > 10


@dataclass(frozen=True)
class Hardware:
    gpus: tuple[DetectedGpu, ...]
    source: str  # "nvidia-smi", "torch" or "none"
    note: str

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    def free_gpus(self) -> tuple[DetectedGpu, ...]:
        return tuple(g for g in self.gpus if not g.busy)


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def parse_nvidia_smi(text: str) -> tuple[DetectedGpu, ...]:
    """Parse `nvidia-smi --query-gpu=index,name,memory.total[,memory.used,utilization.gpu]
    --format=csv,noheader,nounits` (memory in MiB). Also takes plain `name,memory.total`."""
    gpus: list[DetectedGpu] = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 2 or not line.strip():
            continue
        # the short form has no index column: number the cards in order
        if len(fields) == 2:
            fields = [str(len(gpus)), *fields]
        index, name, total = fields[0], fields[1], _number(fields[2])
        if total is None or not name:
            continue
        used = _number(fields[3]) if len(fields) > 3 else None
        util = _number(fields[4]) if len(fields) > 4 else None
        idx = int(index) if index.isdigit() else len(gpus)
        gpus.append(
            DetectedGpu(
                idx,
                name,
                # nounits gives MiB
                round(total / 1024, 1),
                round(used / 1024, 1) if used is not None else None,
                util,
            )
        )
    return tuple(gpus)


def _from_nvidia_smi(executable: str) -> tuple[tuple[DetectedGpu, ...] | None, str]:
    path = shutil.which(executable)
    if path is None:
        return None, "nvidia-smi not found"
    try:
        proc = subprocess.run(
            [path, f"--query-gpu={_QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            # a wedged driver can make nvidia-smi hang; the estimate must still answer
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"nvidia-smi did not answer ({exc})"
    if proc.returncode != 0:
        first = (proc.stderr or proc.stdout).strip().splitlines()[:1]
        return None, "nvidia-smi failed: " + (first[0] if first else f"exit {proc.returncode}")
    return parse_nvidia_smi(proc.stdout), "nvidia-smi"


def _from_torch() -> tuple[tuple[DetectedGpu, ...] | None, str]:
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    try:
        if not torch.cuda.is_available():
            return (), "torch sees no CUDA device"
        gpus = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append(DetectedGpu(i, props.name, round(props.total_memory / 2**30, 1)))
        return tuple(gpus), "torch"
    except Exception as exc:  # a broken driver shows up here as many exception types
        return None, f"torch could not query CUDA ({exc})"


def _visible(gpus: tuple[DetectedGpu, ...]) -> tuple[DetectedGpu, ...]:
    """The GPUs CUDA_VISIBLE_DEVICES lets this process use (nvidia-smi ignores it), in
    its order; unchanged when it is unset or names GPUs by UUID."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return gpus
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    # UUIDs (GPU-...) or MIG names cannot be mapped to nvidia-smi's indices
    if not all(v.isdigit() for v in wanted):
        return gpus
    by_index = {g.index: g for g in gpus}
    return tuple(by_index[int(v)] for v in wanted if int(v) in by_index)


def detect(*, nvidia_smi: str = "nvidia-smi", use_torch: bool = True) -> Hardware:
    """The NVIDIA GPUs this process may use; never raises."""
    # nvidia-smi first: it works without torch and sees every card, busy or not
    gpus, how = _from_nvidia_smi(nvidia_smi)
    if gpus:
        gpus = _visible(gpus)
    if gpus:
        return Hardware(gpus, "nvidia-smi", f"found {len(gpus)} GPU(s) with nvidia-smi")
    reasons = [how]
    if use_torch:
        torch_gpus, torch_how = _from_torch()
        if torch_gpus:
            return Hardware(torch_gpus, "torch", f"found {len(torch_gpus)} GPU(s) with torch")
        reasons.append(torch_how)
    return Hardware(
        (),
        "none",
        "no NVIDIA GPU found on this machine (" + "; ".join(reasons) + "): training here runs "
        "on the CPU, which is only practical for the tiny demo model",
    )


def preset_for(gpu: DetectedGpu) -> str:
    """The GPU preset for a detected card: kohyagen.config.presets matches the driver's name (and
    memory, so an 80 GB A100 is not taken for the 40 GB one), else the largest generic
    NNgb preset within its VRAM. A card under the smallest preset is reported as "cpu"."""
    from kohyagen.config.presets import match_gpu
    from kohyagen.errors import PresetError

    try:
        return match_gpu(gpu.name, gpu.vram_gb).name
    except PresetError:
        return CPU


def detect_preset(hardware: Hardware | None = None) -> tuple[str, Hardware]:
    """The preset of the first GPU, or "cpu" when there is none (or it is too small)."""
    hardware = hardware or detect()
    if not hardware.gpus:
        return CPU, hardware
    preset = preset_for(hardware.gpus[0])
    if preset == CPU:
        gpu = hardware.gpus[0]
        note = (
            f"{gpu.name} has {gpu.vram_gb:g} GB, less than LoRA training needs (8 GB): "
            "training here runs on the CPU, which is only practical for the tiny demo model"
        )
        return CPU, Hardware(hardware.gpus, hardware.source, note)
    return preset, hardware
