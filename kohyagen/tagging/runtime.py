"""onnxruntime for the tagger: execution provider choice and what the model expects.

Everything about the model's input (name, side, layout, batch) is read from the ONNX
graph rather than assumed, so that v2, v3 and third-party exports all work.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kohyagen import safe_io
from kohyagen.errors import TaggingError

# Fastest first. TensorRT is left out on purpose: it needs its own libraries and a
# long engine build, and onnxruntime lists it whenever the GPU package is installed.
PREFERRED_PROVIDERS: tuple[str, ...] = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "CPUExecutionProvider",
)
PROVIDER_LABELS = {
    "CUDAExecutionProvider": "CUDA",
    "ROCMExecutionProvider": "ROCm",
    "CoreMLExecutionProvider": "CoreML",
    "DmlExecutionProvider": "DirectML",
    "CPUExecutionProvider": "CPU",
}
GPU_FIX = "pip uninstall -y onnxruntime && pip install onnxruntime-gpu"
# Every WD tagger is trained at this side; used only when the model leaves it dynamic.
FALLBACK_SIZE = 448


@dataclass(frozen=True)
class ModelInput:
    """What one forward pass takes and gives."""

    name: str
    size: int
    layout: str  # "NHWC" or "NCHW"
    fixed_batch: int | None
    dtype: np.dtype
    output_name: str
    output_count: int | None

    def batch_shape(self, rows: int) -> tuple[int, ...]:
        if self.layout == "NHWC":
            return (rows, self.size, self.size, 3)
        return (rows, 3, self.size, self.size)


@dataclass
class Runtime:
    session: Any
    input: ModelInput
    provider: str  # label of the provider actually running the model
    warnings: list[str]

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.input.output_name], {self.input.name: batch})[0]


def nvidia_gpu_present() -> bool:
    # a cheap check with no GPU library: only to warn about a CPU-only onnxruntime
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").exists()


def choose_providers(available: Sequence[str], requested: Sequence[str] | None = None) -> list[str]:
    """The providers to ask for, best first; CPU always last as the fallback."""
    if requested:
        chosen = [_provider_name(p) for p in requested]
        missing = [p for p in chosen if p not in available]
        if missing:
            raise TaggingError(
                f"onnxruntime here has no {', '.join(missing)} (available: {', '.join(available)})",
                hint="install the onnxruntime build for that device, or leave the choice to "
                "kohyagen",
            )
    else:
        chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    # CPU always last: onnxruntime then falls back instead of failing to start
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def _provider_name(text: str) -> str:
    for name, label in PROVIDER_LABELS.items():
        if text.lower() in (name.lower(), label.lower()):
            return name
    return text


def provider_warnings(available: Sequence[str]) -> list[str]:
    """Warn when an NVIDIA GPU sits idle because the CPU-only onnxruntime is installed."""
    gpu_providers = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    if nvidia_gpu_present() and not gpu_providers.intersection(available):
        return [
            "an NVIDIA GPU is present but onnxruntime can only use the CPU, so tagging "
            f"is much slower than it should be; fix: {GPU_FIX}"
        ]
    return []


def read_model_input(session: Any, path: Path) -> ModelInput:
    inputs = session.get_inputs()
    outputs = session.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise TaggingError(
            f"expected a tagger with one image input, found {len(inputs)} inputs",
            path=path,
        )
    node = inputs[0]
    shape = list(node.shape)
    if len(shape) != 4:
        raise TaggingError(
            f"the model input {node.name} has shape {shape}, not an image batch",
            path=path,
        )
    # SmilingWolf's exports are NHWC; some third-party ones are NCHW
    if shape[3] == 3:
        layout, sides = "NHWC", shape[1:3]
    elif shape[1] == 3:
        layout, sides = "NCHW", shape[2:4]
    else:
        raise TaggingError(
            f"cannot tell the channel axis of input shape {shape}",
            path=path,
            hint="WD14 taggers take [batch, side, side, 3]",
        )
    fixed = [s for s in sides if isinstance(s, int) and s > 0]
    if len(set(fixed)) > 1:
        raise TaggingError(f"the model input is not square: {shape}", path=path)
    # kohya's tagger hard-codes 448 (IMAGE_SIZE) instead of reading the model, which breaks
    # models trained at another side
    size = fixed[0] if fixed else FALLBACK_SIZE
    # a fixed batch dimension must be filled: kohya's tagger overrides --batch_size to match
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    dtype = np.float16 if node.type == "tensor(float16)" else np.float32
    out = outputs[0]
    out_shape = list(out.shape)
    count = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
    return ModelInput(node.name, size, layout, batch, np.dtype(dtype), out.name, count)


def open_runtime(model_path: Path, providers: Sequence[str] | None = None) -> Runtime:
    """Load the model on the best provider available and say which one runs it."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen = choose_providers(available, providers)
    warnings = provider_warnings(available)
    options = ort.SessionOptions()
    # every graph rewrite onnxruntime has: one cost at load, then every batch runs faster
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        # onnxruntime would block on a FIFO and read a link to /dev/zero forever
        os.close(safe_io.open_fd(model_path)[0])
    except OSError as exc:
        raise TaggingError(
            f"cannot read the tagger: {exc.strerror}", path=model_path, hint="pass model.onnx"
        ) from exc
    try:
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise TaggingError(
            f"onnxruntime cannot load the tagger: {str(exc).splitlines()[0]}",
            path=model_path,
            hint="the file may be truncated; delete it from the cache and download it again",
        ) from exc
    active = session.get_providers()
    provider = active[0] if active else "CPUExecutionProvider"
    if chosen[0] != "CPUExecutionProvider" and provider == "CPUExecutionProvider":
        # onnxruntime falls back silently when e.g. cuDNN or the CUDA runtime is missing.
        warnings.append(
            f"onnxruntime could not start {PROVIDER_LABELS.get(chosen[0], chosen[0])} and fell "
            "back to the CPU; check that the CUDA/cuDNN versions match your onnxruntime-gpu"
        )
    label = PROVIDER_LABELS.get(provider, provider.removesuffix("ExecutionProvider"))
    return Runtime(session, read_model_input(session, model_path), label, warnings)
