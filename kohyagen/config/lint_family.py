"""Lint for the DiT families: each script's start-up assertions, its LoRA module and its
model files, checked before a GPU is rented (facts: model-families.md section 2).

One entry, `family_findings`, called by kohyagen.config.lint for configs of
flux/sd3/lumina/hunyuan_image/anima_train_network.py. The keys and TOML types come from
each script's schema (lint picks it with schema.script_for_config); the bucket step
from kohyagen.config.family.BUCKET_STEP, through lint_runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kohyagen.config.families import SCRIPT_FAMILY
from kohyagen.config.model_files import check_model_file
from kohyagen.findings import Finding, Severity

# family -> (kohya script, LoRA module, model-file options: (role, option, required))
FAMILIES: dict[str, tuple[str, str, tuple[tuple[str, str, bool], ...]]] = {
    "flux": ("flux_train_network", "networks.lora_flux", (
        ("dit", "pretrained_model_name_or_path", True), ("clip_l", "clip_l", True),
        ("t5xxl", "t5xxl", True), ("ae", "ae", True))),
    "chroma": ("flux_train_network", "networks.lora_flux", (
        ("dit", "pretrained_model_name_or_path", True), ("t5xxl", "t5xxl", True),
        ("ae", "ae", True))),
    "sd3": ("sd3_train_network", "networks.lora_sd3", (
        ("checkpoint", "pretrained_model_name_or_path", True), ("clip_l", "clip_l", False),
        ("clip_g", "clip_g", False), ("t5xxl", "t5xxl", False))),
    "lumina2": ("lumina_train_network", "networks.lora_lumina", (
        ("dit", "pretrained_model_name_or_path", True), ("gemma2", "gemma2", True),
        ("ae", "ae", True))),
    "hunyuan-image": ("hunyuan_image_train_network", "networks.lora_hunyuan_image", (
        ("dit", "pretrained_model_name_or_path", True), ("text_encoder", "text_encoder", True),
        ("byt5", "byt5", True), ("vae", "vae", True))),
    "anima": ("anima_train_network", "networks.lora_anima", (
        ("dit", "pretrained_model_name_or_path", True), ("qwen3", "qwen3", True),
        ("vae", "vae", True))),
}  # fmt: skip
CAPTION_CHANGERS = ("caption_dropout_rate", "shuffle_caption", "token_warmup_step",
                    "caption_tag_dropout_rate")  # fmt: skip
FLUX_MAX_SWAP = 35  # full FLUX.1: keep 2 double and 2 single blocks (flux_models.py:972-980)


def family_of(family_or_script: str, training: dict[str, Any]) -> str | None:
    """ "flux"/"chroma"/... from a family name or a kohya script name (None: not a DiT one)."""
    name = family_or_script.removesuffix(".py")
    name = SCRIPT_FAMILY.get(name, name)
    if name == "flux" and training.get("model_type") == "chroma":
        return "chroma"
    return name if name in FAMILIES else None


def _values(training: dict, dataset: dict | None, key: str) -> list[Any]:
    """key's value in the training options and every dataset table that sets it."""
    out = [training[key]] if key in training else []
    if not isinstance(dataset, dict):
        return out
    general = dataset.get("general")
    if isinstance(general, dict) and key in general:
        out.append(general[key])
    for ds in dataset.get("datasets", []) or []:
        if not isinstance(ds, dict):
            continue
        if key in ds:
            out.append(ds[key])
        out += [s[key] for s in ds.get("subsets", []) or [] if isinstance(s, dict) and key in s]
    return out


def _active(values: list[Any]) -> bool:
    return any(v is True or (type(v) in (int, float) and v > 0) for v in values)


def family_findings(
    training: dict, dataset: dict | None, family: str, base_dir: Path
) -> list[Finding]:
    """Every problem a DiT family's script would hit at start-up, and its model files.

    training: the flat training options; dataset: the dataset TOML's data (or None);
    family: a family name ("flux") or its script ("flux_train_network"); base_dir: the
    folder relative paths are resolved from.
    """
    name = family_of(family, training)
    if name is None:
        return []
    out = _module_findings(training, name)
    out += _caching_findings(training, dataset, name)
    out += _script_findings(training, name)
    out += _file_findings(training, name, base_dir)
    return out


def _f(sev: Severity, code: str, message: str, key: str | None, fix: str | None) -> Finding:
    return Finding(sev, code, message, key=key, fix=fix)


def _module_findings(training: dict, name: str) -> list[Finding]:
    script, module, _files = FAMILIES[name]
    given = training.get("network_module")
    if not isinstance(given, str) or given == module:
        return []
    return [_f(Severity.ERROR, "family-network-module",
               f"network_module {given!r} is not {script}.py's LoRA module: {module} targets "
               f"this model's blocks, {given} finds none of them", "network_module",
               f'network_module = "{module}"')]  # fmt: skip


def _caching_findings(training: dict, dataset: dict | None, name: str) -> list[Finding]:
    caching = bool(training.get("cache_text_encoder_outputs")) or bool(
        training.get("cache_text_encoder_outputs_to_disk")
    )
    if not caching or name == "lumina2":  # Lumina's script has no such assertion
        return []
    out = []
    # Anima alone lets caption dropout work with cached outputs (anima docs).
    changers = [
        k for k in CAPTION_CHANGERS if not (name == "anima" and k == "caption_dropout_rate")
    ]
    for key in changers:
        if _active(_values(training, dataset, key)):
            out.append(_f(Severity.ERROR, "te-cache-with-caption-changes",
                          f"{key} changes captions every step, which cached text-encoder outputs "
                          "cannot follow (kohya asserts: 'when caching Text Encoder output, ... "
                          "cannot be used')", key, f"drop {key}, or cache_text_encoder_outputs"))  # fmt: skip
    if name == "anima" and not training.get("network_train_unet_only"):
        out.append(_f(Severity.ERROR, "te-cache-with-te-training",
                      "Anima: cached text-encoder outputs while the text encoder is trained "
                      "(kohya asserts: 'network for Text Encoder cannot be trained with caching')",
                      "network_train_unet_only", "network_train_unet_only = true"))  # fmt: skip
    args = " ".join(str(a) for a in training.get("network_args", []) or [])
    if name in ("flux", "chroma", "sd3") and "train_t5xxl=true" in args.replace(" ", "").lower():
        out.append(_f(Severity.ERROR, "t5-trained-with-cache",
                      "network_args train_t5xxl=True with cached text-encoder outputs (kohya "
                      "raises 'T5XXL is trained, so cache_text_encoder_outputs cannot be used')",
                      "network_args", "drop train_t5xxl=True or the cache"))  # fmt: skip
    return out


def _script_findings(training: dict, name: str) -> list[Finding]:
    out: list[Finding] = []
    swap = training.get("blocks_to_swap")
    swapping = isinstance(swap, int) and swap > 0
    if swapping and training.get("cpu_offload_checkpointing") and name != "lumina2":
        out.append(_f(Severity.ERROR, "swap-with-cpu-offload",
                      "blocks_to_swap is not supported with cpu_offload_checkpointing (kohya "
                      "asserts)", "cpu_offload_checkpointing", "drop cpu_offload_checkpointing"))  # fmt: skip
    if name in ("flux", "chroma"):
        out += _flux_findings(training, name, swap)
    if name == "hunyuan-image":
        out += _hunyuan_findings(training)
    if name == "anima":
        out += _anima_findings(training, swapping)
    if training.get("max_token_length") is not None and name in ("flux", "chroma", "sd3"):
        out.append(_f(Severity.WARNING, "unused-option",
                      f"max_token_length is not used by {FAMILIES[name][0]}.py (kohya warns)",
                      "max_token_length", "remove it"))  # fmt: skip
    return out


def _flux_findings(training: dict, name: str, swap: Any) -> list[Finding]:
    out = []
    if name == "chroma" and not training.get("apply_t5_attn_mask"):
        out.append(_f(Severity.ERROR, "chroma-needs-t5-mask",
                      "apply_t5_attn_mask must be True for Chroma (kohya asserts)",
                      "apply_t5_attn_mask", "apply_t5_attn_mask = true"))  # fmt: skip
    if isinstance(swap, int) and swap > FLUX_MAX_SWAP:
        out.append(_f(Severity.ERROR, "too-many-swapped-blocks",
                      f"blocks_to_swap {swap}: full FLUX.1 can swap at most {FLUX_MAX_SWAP} "
                      "(kohya asserts 'Cannot swap more than ...' after loading the DiT)",
                      "blocks_to_swap", f"blocks_to_swap = {FLUX_MAX_SWAP}"))  # fmt: skip
    if training.get("split_mode"):
        out.append(_f(Severity.WARNING, "deprecated-option",
                      "split_mode is deprecated; kohya sets blocks_to_swap 18 instead",
                      "split_mode", "blocks_to_swap = 18"))  # fmt: skip
    guidance = training.get("guidance_scale")
    if name == "flux" and guidance is None:
        out.append(_f(Severity.WARNING, "flux-guidance-scale",
                      "guidance_scale is not set: kohya trains FLUX.1 dev with 3.5, its docs say "
                      "1.0 ('be sure to specify this')", "guidance_scale", "guidance_scale = 1.0"))  # fmt: skip
    return out


def _hunyuan_findings(training: dict) -> list[Finding]:
    out = []
    if not training.get("network_train_unet_only"):
        out.append(_f(Severity.ERROR, "hunyuan-unet-only",
                      "HunyuanImage trains the DiT only: network_train_unet_only is required "
                      "(its text encoders are never trained)", "network_train_unet_only",
                      "network_train_unet_only = true"))  # fmt: skip
    if training.get("mixed_precision") == "fp16":
        out.append(_f(Severity.WARNING, "hunyuan-fp16",
                      "HunyuanImage in fp16: kohya warns, bf16 is what it is trained in",
                      "mixed_precision", 'mixed_precision = "bf16"'))  # fmt: skip
    if (training.get("fp8_base") or training.get("fp8_base_unet")) and not training.get(
        "fp8_scaled"
    ):
        out.append(_f(Severity.WARNING, "hunyuan-fp8-base",
                      "fp8_base is not supported for HunyuanImage (kohya warns and ignores it)",
                      "fp8_base", "fp8_scaled = true instead"))  # fmt: skip
    return out


def _anima_findings(training: dict, swapping: bool) -> list[Finding]:
    out = []
    if training.get("fp8_base") or training.get("fp8_base_unet"):
        out.append(_f(Severity.WARNING, "anima-fp8",
                      "Anima has no fp8 mode: kohya switches fp8_base off", "fp8_base",
                      "remove fp8_base (use blocks_to_swap to save memory)"))  # fmt: skip
    if training.get("unsloth_offload_checkpointing"):
        if training.get("cpu_offload_checkpointing"):
            out.append(_f(Severity.ERROR, "unsloth-with-cpu-offload",
                          "Cannot use both unsloth_offload_checkpointing and "
                          "cpu_offload_checkpointing (kohya asserts)",
                          "unsloth_offload_checkpointing", "keep one of them"))  # fmt: skip
        if swapping:
            out.append(_f(Severity.ERROR, "swap-with-unsloth-offload",
                          "blocks_to_swap is not supported with unsloth_offload_checkpointing "
                          "(kohya asserts)", "blocks_to_swap", "drop one of them"))  # fmt: skip
    return out


def _file_findings(training: dict, name: str, base_dir: Path) -> list[Finding]:
    _script, _module, files = FAMILIES[name]
    out = []
    for role, option, required in files:
        value = training.get(option)
        if not isinstance(value, str) or not value:
            if required and option != "pretrained_model_name_or_path":  # lint.py reports that
                out.append(_f(Severity.ERROR, "missing-model-file",
                              f"{option} is not set: {FAMILIES[name][0]}.py needs the {role} "
                              "file and fails only after scanning the dataset", option,
                              f'{option} = "/abs/path/{role}.safetensors"'))  # fmt: skip
            continue
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if option == "pretrained_model_name_or_path" and not path.exists():
            continue  # lint.py reports a missing base model
        for problem in check_model_file(name, role, option, str(path)):
            out.append(_f(Severity.ERROR, "model-file", problem, option,
                          f"fix {option} (kohya loads it only after the dataset scan)"))  # fmt: skip
    return out
