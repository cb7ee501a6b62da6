"""Which GPUs this machine has, and which kohyagen GPU preset fits each.

nvidia-smi is asked first (no Python GPU stack needed); when it is missing or fails,
torch.cuda is asked if torch is installed. A machine with neither sees no GPU, and the
result says why in plain words.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

CPU = "cpu"
# Generic presets by memory size, used when no named preset matches the card.
GENERIC_SIZES_GB = (8, 12, 16, 24, 40, 48, 80)
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


def detect(*, nvidia_smi: str = "nvidia-smi", use_torch: bool = True) -> Hardware:
    """The NVIDIA GPUs of this machine; never raises."""
    gpus, how = _from_nvidia_smi(nvidia_smi)
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


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower()).replace("nvidia", "").replace("geforce", "")


def _named_presets() -> list[tuple[str, tuple[str, ...]]]:
    """(preset name, names it is known by), from kohyagen.presets or throughput.toml."""
    try:
        from kohyagen import presets
    except ImportError:
        presets = None
    if presets is not None:
        out = []
        for p in presets.list_gpus():
            names = (p.name, p.label, *(getattr(p, "aliases", ()) or ()))
            out.append((p.name, names))
        return out
    from kohyagen.throughput import throughput_data

    return [(k, (k, *v.get("aliases", []))) for k, v in throughput_data()["gpus"].items()]


def _generic_names() -> list[tuple[int, str]]:
    try:
        from kohyagen import presets
    except ImportError:
        return [(size, f"{size}gb") for size in GENERIC_SIZES_GB]
    sizes = []
    for p in presets.list_gpus():
        match = re.fullmatch(r"(?:generic[_-]?)?(\d+)gb", p.name.lower())
        if match:
            sizes.append((int(match.group(1)), p.name))
    return sorted(sizes)


def preset_for(gpu: DetectedGpu) -> str:
    """The GPU preset for a detected card: by name (longest match wins, so "RTX 4090"
    is not taken for "RTX 40"), else the largest generic NNgb preset that fits its VRAM."""
    wanted = _norm(gpu.name)
    best: tuple[int, str] | None = None
    for preset, names in _named_presets():
        for name in names:
            n = _norm(name)
            if n and (n == wanted or n in wanted) and (best is None or len(n) > best[0]):
                # an 80 GB card must not match the 40 GB preset of the same name
                best = (len(n), preset)
    if best is not None and not _vram_contradicts(best[1], gpu.vram_gb):
        return best[1]
    generic = _generic_names()
    fitting = [name for size, name in generic if size <= gpu.vram_gb + 0.5]
    if fitting:
        return fitting[-1]
    return generic[0][1] if generic else f"{round(gpu.vram_gb)}gb"


def _vram_contradicts(preset: str, vram_gb: float) -> bool:
    try:
        from kohyagen.throughput import gpu_info

        preset_vram = gpu_info(preset).vram_gb
    except Exception:
        return False
    return preset_vram is not None and abs(preset_vram - vram_gb) > 0.25 * preset_vram


def detect_preset(hardware: Hardware | None = None) -> tuple[str, Hardware]:
    """The preset of the first GPU, or "cpu" when there is none."""
    hardware = hardware or detect()
    if not hardware.gpus:
        return CPU, hardware
    return preset_for(hardware.gpus[0]), hardware
