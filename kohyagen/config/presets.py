"""Model and GPU presets (data in templates/presets/): loading them and looking them up.

The memory model is data too (models.toml, [<model>.memory] and [fit]), so that the
choice "fastest settings that fit" is explicit and testable: this module loads it
(`fit_params`, `ModelPreset.memory`), and kohyagen.config.training_plan computes the
VRAM a configuration needs and searches the configurations from fastest to slowest.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from kohyagen.config.families import Family, family_from_data
from kohyagen.config.family import BUCKET_STEP
from kohyagen.errors import PresetError
from kohyagen.resources import template_path
from kohyagen.toml_compat import tomllib

ATTENTIONS = ("sdpa", "xformers")


@dataclass(frozen=True)
class MemoryModel:
    base_gb: float
    per_sample_gb: float
    per_sample_gc_gb: float
    adamw_extra_gb: float
    unet_only_saving_gb: float
    fp8_saving_gb: float


@dataclass(frozen=True)
class ModelPreset:
    name: str
    label: str
    script: str
    resolution: int
    min_side: int
    v2: bool
    v_parameterization: bool
    default_base_model: str
    learning_rate: float
    unet_lr: float
    text_encoder_lr: float
    network_dim: int
    network_alpha: float
    max_batch: int
    target_samples: int
    min_samples: int
    max_samples: int
    train_unet_only: bool
    sample_steps: int
    sample_cfg: float
    memory: MemoryModel | None
    family: Family | None = None  # the DiT families (families.toml); None for SD1/2/XL
    apps: str = "A1111/Forge, ComfyUI and diffusers (kohya's SD LoRA format)"
    sample_extra: str = ""  # more --sample_prompts options the family needs

    @property
    def is_dit(self) -> bool:
        return self.family is not None

    @property
    def network_module(self) -> str:
        return self.family.network_module if self.family else "networks.lora"

    @property
    def bucket_step(self) -> int:
        """kohya asserts bucket_reso_steps is a multiple of this (SDXL: 32)."""
        return BUCKET_STEP[self.name]

    @property
    def script_name(self) -> str:
        """The script without .py, as kohyagen.config.schema names it."""
        return self.script.removesuffix(".py")

    @property
    def is_sdxl(self) -> bool:
        return self.script_name == "sdxl_train_network"


@dataclass(frozen=True)
class GpuPreset:
    name: str
    label: str
    vram_gb: float
    bf16: bool
    fp8: bool
    price_per_hour: float
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class FitParams:
    usable_fraction: float
    batch_sizes: tuple[int, ...]
    step_overhead: float
    gc_slowdown: float
    adamw8bit_slowdown: float


@dataclass(frozen=True)
class Setting:
    value: Any
    reason: str


@cache
def _load(name: str) -> dict[str, Any]:
    path = template_path(f"presets/{name}.toml")
    with open(path, "rb") as fh:
        return tomllib.load(fh)


@cache
def fit_params() -> FitParams:
    raw = _load("models")["fit"]
    return FitParams(
        usable_fraction=float(raw["usable_fraction"]),
        batch_sizes=tuple(int(b) for b in raw["batch_sizes"]),
        step_overhead=float(raw["step_overhead"]),
        gc_slowdown=float(raw["gc_slowdown"]),
        adamw8bit_slowdown=float(raw["adamw8bit_slowdown"]),
    )


@cache
def _models() -> dict[str, ModelPreset]:
    out = {}
    for name, raw in _load("models").items():
        # [fit] holds the search's parameters, not a model
        if name == "fit":
            continue
        fields = {k: v for k, v in raw.items() if k != "memory"}
        out[name] = ModelPreset(name=name, memory=MemoryModel(**raw["memory"]), **fields)
    family_data = {"files", "options", "memory", "medium_memory", "network_module"}
    for name, raw in _load("families").items():
        fields = {k: v for k, v in raw.items() if k not in family_data}
        out[name] = ModelPreset(name=name, memory=None, family=family_from_data(raw), **fields)
    return out


@cache
def _gpus() -> dict[str, GpuPreset]:
    out = {}
    for name, raw in _load("gpus").items():
        fields = dict(raw)
        fields["aliases"] = tuple(fields.get("aliases", ()))
        out[name] = GpuPreset(name=name, **fields)
    return out


def list_models() -> list[ModelPreset]:
    return list(_models().values())


def list_gpus() -> list[GpuPreset]:
    return list(_gpus().values())


def _unknown(kind: str, name: str, valid: list[str]) -> PresetError:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return PresetError(f"unknown {kind} {name!r}", hint=f"{hint}valid: {', '.join(valid)}")


def get_model(name: str) -> ModelPreset:
    models = _models()
    # people write sd-1.5, SD15, sd1.5, FLUX.1-dev: all one preset
    key = name.strip().lower().replace("-", "").replace(".", "").replace("_", "")
    aliases = {
        "sd1": "sd15", "sdv15": "sd15", "sd21": "sd2", "sd20": "sd2", "xl": "sdxl",
        "flux1": "flux", "fluxdev": "flux", "flux1dev": "flux", "fluxschnell": "flux",
        "flux1schnell": "flux", "sd35": "sd3", "sd3medium": "sd3", "sd35medium": "sd3",
        "sd35large": "sd3", "lumina": "lumina2", "lumina20": "lumina2",
        "hunyuanimage": "hunyuan-image", "hunyuan": "hunyuan-image",
        "hunyuanimage21": "hunyuan-image",
    }  # fmt: skip
    key = aliases.get(key, key)
    if key not in models:
        raise _unknown("model", name, list(models))
    return models[key]


def get_gpu(name: str) -> GpuPreset:
    gpus = _gpus()
    # `RTX 4090`, `rtx_4090` and `rtx4090` name one card
    key = name.strip().lower().replace(" ", "").replace("_", "-")
    if key in gpus:
        return gpus[key]
    for gpu in gpus.values():
        if key in gpu.aliases:
            return gpu
    raise _unknown("GPU", name, list(gpus))


def match_gpu(label: str, vram_gb: float | None = None) -> GpuPreset:
    """The preset for a GPU as the driver names it (e.g. nvidia-smi's "NVIDIA GeForce RTX
    4090"); an unlisted card falls back to the largest generic size within its memory."""
    wanted = re.sub(r"[^a-z0-9]", "", label.lower())
    # presets whose name starts with a digit (24gb, 80gb) are generic sizes, not cards
    named = [g for g in _gpus().values() if not g.name[0].isdigit()]
    for gpu in named:
        if re.sub(r"[^a-z0-9]", "", gpu.label.lower()) == wanted:
            return gpu
    # "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3": model name plus memory.
    candidates = [
        g
        for g in named
        if re.sub(r"[^a-z0-9]", "", g.name.split("-")[0]) in wanted
        and (vram_gb is None or abs(g.vram_gb - vram_gb) <= max(2.0, 0.1 * g.vram_gb))
    ]
    if candidates:
        # the longest match is the most specific: a100-80gb over a100
        return max(candidates, key=lambda g: len(g.name))
    if vram_gb is None:
        raise PresetError(
            f"no GPU preset matches {label!r}", hint="pass --gpu NAME or a size such as 24gb"
        )
    # drivers report a little less than the marketed size (23.6 GB for a 24 GB card)
    generic = [g for g in _gpus().values() if g.name[0].isdigit() and g.vram_gb <= vram_gb + 0.5]
    if not generic:
        raise PresetError(
            f"{label} has {vram_gb:g} GB, less than the smallest preset (8 GB)",
            hint="LoRA training needs at least 8 GB of GPU memory",
        )
    return max(generic, key=lambda g: g.vram_gb)
