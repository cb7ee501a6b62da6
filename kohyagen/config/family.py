"""Which model family a training config is for: the rules of kohya change with it.

Found in this order, first answer wins: the family the user names (`lint --model`,
the names `kohyagen config` uses), the script the user names, options that only one
family's script has, the base model file's own safetensors header (only its JSON
header is read, bounded), and last the model's name. `FamilyGuess.name` is None
when nothing tells.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SD15, SD2, SDXL = "sd15", "sd2", "sdxl"
FLUX, CHROMA, SD3, LUMINA2, HUNYUAN, ANIMA = (
    "flux", "chroma", "sd3", "lumina2", "hunyuan-image", "anima",
)  # fmt: skip
FAMILIES = (SD15, SD2, SDXL, FLUX, CHROMA, SD3, LUMINA2, HUNYUAN, ANIMA)
ALIASES = {"sd1": SD15, "sd1.5": SD15, "sd_v1": SD15, "sd21": SD2, "sd2.1": SD2, "lumina": LUMINA2,
           "hunyuan": HUNYUAN, "hunyuan_image": HUNYUAN, "sd35": SD3, "sd3.5": SD3}  # fmt: skip

SCRIPT_FAMILY = {
    "train_network": SD15,  # or SD2: v2 = true tells (see _by_script)
    "sdxl_train_network": SDXL,
    "flux_train_network": FLUX,  # or Chroma: model_type = "chroma"
    "sd3_train_network": SD3,
    "lumina_train_network": LUMINA2,
    "hunyuan_image_train_network": HUNYUAN,
    "anima_train_network": ANIMA,
}
FAMILY_SCRIPT = {
    SD15: "train_network", SD2: "train_network", SDXL: "sdxl_train_network",
    FLUX: "flux_train_network", CHROMA: "flux_train_network", SD3: "sd3_train_network",
    LUMINA2: "lumina_train_network", HUNYUAN: "hunyuan_image_train_network",
    ANIMA: "anima_train_network",
}  # fmt: skip
# The multiple bucket_reso_steps must be, per family (model-families.md): train_network's
# assert_extra_args asserts % 64, and FLUX/Lumina/Hunyuan call it first; SDXL and SD3
# replace it with % 32; Anima with % 16.
BUCKET_STEP = {SD15: 64, SD2: 64, FLUX: 64, CHROMA: 64, LUMINA2: 64, HUNYUAN: 64, SDXL: 32,
               SD3: 32, ANIMA: 16}  # fmt: skip
# Options only one family's script defines (from the seven *.args.json tables, 48d368f).
# SD3 shares t5xxl/clip_l with FLUX, so only its own keys tell it apart.
UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    SD3: ("clip_g", "clip_g_dropout_rate", "save_clip", "save_t5xxl", "t5xxl_device",
          "t5xxl_dtype", "training_shift", "apply_lg_attn_mask", "enable_scaled_pos_embed",
          "pos_emb_random_crop_rate", "t5_dropout_rate"),
    LUMINA2: ("gemma2", "gemma2_max_token_length", "system_prompt", "use_flash_attn",
              "use_sage_attn"),
    HUNYUAN: ("byt5", "fp8_vl", "text_encoder_cpu", "fp8_scaled"),
    ANIMA: ("qwen3", "qwen3_max_token_length", "llm_adapter_path", "llm_adapter_lr",
            "t5_tokenizer_path", "vae_disable_cache", "self_attn_lr", "cross_attn_lr"),
    FLUX: ("guidance_scale", "split_mode", "model_type", "controlnet_model_name_or_path",
           "ae", "apply_t5_attn_mask", "t5xxl"),
}  # fmt: skip
# Model names people give their SDXL derivatives (Illustrious, NoobAI, Pony, Animagine...).
_NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"flux|chroma", FLUX),
    (r"sd3|sd_3|stable.diffusion.3", SD3),
    (r"lumina", LUMINA2),
    (r"hunyuan", HUNYUAN),
    (r"anima(?!gine)", ANIMA),
    (r"(^|[^a-z])(sdxl|xl)([^a-z]|$)|sd_xl|illustrious|noobai|noob|pony|animagine|"
     r"juggernaut|playground|kohaku.xl", SDXL),
    (r"(^|[^a-z])(sd2|v2-1|sd21|768-v)|stable-diffusion-2", SD2),
    (r"(^|[^a-z])(sd15|sd1|v1-5|sd-v1|1\.5)|stable-diffusion-v1", SD15),
)  # fmt: skip
HEADER_LIMIT = 100 * 1024 * 1024  # a real header is a few MB; more is not a safetensors file


@dataclass(frozen=True)
class FamilyGuess:
    name: str | None  # one of FAMILIES, or None when unknown
    source: str  # how it was found: "--model", "script", "keys", "model file", "model name", ""
    detail: str = ""  # e.g. the key or the tensor name that told

    @property
    def known(self) -> bool:
        return self.name is not None

    @property
    def script(self) -> str | None:
        return FAMILY_SCRIPT.get(self.name) if self.name else None


def normalise_family(name: str) -> str | None:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in FAMILIES else None


def _script_name(script: str) -> str:
    return Path(script).name.removesuffix(".py")


def _by_script(training: dict[str, Any], script: str) -> FamilyGuess | None:
    family = SCRIPT_FAMILY.get(_script_name(script))
    if family is None:
        return None
    if family == SD15 and training.get("v2") is True:
        family = SD2
    if family == FLUX and training.get("model_type") == "chroma":
        family = CHROMA
    return FamilyGuess(family, "script", _script_name(script) + ".py")


def _by_keys(training: dict[str, Any]) -> FamilyGuess | None:
    for family, keys in UNIQUE_KEYS.items():
        hit = next((k for k in keys if k in training), None)
        if hit is not None:
            if family == FLUX and training.get("model_type") == "chroma":
                family = CHROMA
            return FamilyGuess(family, "keys", hit)
    from kohyagen.config.schema import SDXL_TRAIN_NETWORK, TRAIN_NETWORK, training_properties

    sd = set(training_properties(TRAIN_NETWORK))
    xl_only = [k for k in training if k in training_properties(SDXL_TRAIN_NETWORK) and k not in sd]
    if xl_only:
        return FamilyGuess(SDXL, "keys", xl_only[0])
    if training.get("v2") is True:
        return FamilyGuess(SD2, "keys", "v2")
    return None


def read_safetensors_keys(path: Path) -> list[str] | None:
    """Tensor names from a .safetensors header (8-byte length, then JSON); None if not one."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                return None
            (size,) = struct.unpack("<Q", raw)
            if not 2 <= size <= HEADER_LIMIT:
                return None
            header = json.loads(fh.read(size))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    return [k for k in header if k != "__metadata__"]


def family_from_tensors(names: list[str]) -> tuple[str, str] | None:
    """(family, the tensor that told), from names in the original checkpoints' layouts."""
    rules = (
        ("distilled_guidance_layer.", CHROMA),
        ("joint_blocks.", SD3),
        ("cap_embedder.", LUMINA2),
        ("byt5_in.", HUNYUAN),
        ("llm_adapter.", ANIMA),
        ("double_blocks.", FLUX),
        ("conditioner.embedders.1.", SDXL),
        ("label_emb.", SDXL),
        ("cond_stage_model.model.", SD2),  # OpenCLIP text encoder
        ("cond_stage_model.transformer.", SD15),  # CLIP ViT-L text encoder
    )
    for needle, family in rules:
        hit = next((n for n in names if needle in n), None)
        if hit is not None:
            return family, hit
    return None


def _by_file(model: str | None, base_dir: Path) -> FamilyGuess | None:
    if not model or not model.lower().endswith((".safetensors", ".sft")):
        return None
    path = Path(model).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        return None
    names = read_safetensors_keys(path)
    told = family_from_tensors(names) if names else None
    return FamilyGuess(told[0], "model file", told[1]) if told else None


def _by_name(model: str | None) -> FamilyGuess | None:
    if not model:
        return None
    name = model.replace("\\", "/").lower()
    for pattern, family in _NAME_PATTERNS:
        if re.search(pattern, name):
            return FamilyGuess(family, "model name", Path(name).name)
    return None


def detect_family(
    training: dict[str, Any], *, model: str | None, script: str | None, base_dir: Path
) -> FamilyGuess:
    """The model family of a flat training config, and how it was found.

    model: the family the user named (`--model`); script: the kohya script the user
    names or the config's kohyagen marker; base_dir: where relative model paths start.
    """
    if model:
        family = normalise_family(model)
        if family is not None:
            return FamilyGuess(family, "--model", model)
    base = training.get("pretrained_model_name_or_path")
    base = base if isinstance(base, str) else None
    for guess in (
        _by_script(training, script) if script else None,
        _by_keys(training),
        _by_file(base, base_dir),
        _by_name(base),
    ):
        if guess is not None:
            return guess
    return FamilyGuess(None, "")
