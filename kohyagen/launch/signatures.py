"""The failure signatures: what sd-scripts and torch print when a run fails, with cause and fix.

A table of its own, apart from the diagnosis that reads it: it grows with every kohya
message learnt and is data, not logic. The signatures below are the ones sd-scripts
(commit 48d368f) and torch actually print; diagnose.find_signature takes the first one
that matches, so the more specific come first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class _Signature:
    code: str
    pattern: re.Pattern[str]
    cause: str
    fix: str
    retryable: bool = False


def _sig(code: str, pattern: str, cause: str, fix: str, retryable: bool = False) -> _Signature:
    return _Signature(code, re.compile(pattern, re.IGNORECASE), cause, fix, retryable)


TOKENIZER_FIX = (
    "kohya loads its CLIP tokenizers from the Hugging Face Hub: run once with network access, "
    "or set tokenizer_cache_dir to a folder holding openai_clip-vit-large-patch14 (and, for "
    "SDXL, laion_CLIP-ViT-bigG-14-laion2B-39B-b160k)"
)

# Order matters: out-of-memory first (it is retried), missing-package after the more
# specific import failures, generic errors last. kohya-interface.md section i lists the
# messages and the sd-scripts lines that print them.
SIGNATURES: tuple[_Signature, ...] = (
    _sig(
        "out-of-memory",
        r"(?:torch\.)?(?:cuda\.)?OutOfMemoryError|CUDA out of memory|CUDA error: out of memory"
        r"|HIP out of memory|MPS backend out of memory",
        "the GPU ran out of memory",
        "lower the memory use: gradient_checkpointing = true, a smaller train_batch_size, "
        'cache_latents = true, optimizer_type = "AdamW8bit", or a lower resolution '
        "(kohyagen train retries these on its own unless --no-retry)",
        retryable=True,
    ),
    _sig(
        "no-data",
        r"No data found\.?",
        "kohya found no training images (and still exited with status 0)",
        "train_data_dir must be the parent of folders named like 10_concept (repeats_name), "
        "or the dataset config's image_dir must hold the images; check with "
        "`kohyagen dataset check`",
    ),
    _sig(
        "no-network-module",
        # train_network.py:644 imports None only after loading the dataset and models
        r"import network module: None|'NoneType' object has no attribute 'startswith'",
        "network_module is not set, so kohya does not know what to train",
        'set network_module = "networks.lora" in the training config',
    ),
    _sig(
        "network-module-missing",
        r"(?:ModuleNotFoundError|ImportError): No module named '((?:networks|lycoris)[\w.]*)'",
        "the network module cannot be imported",
        'use network_module = "networks.lora" (or install the package that provides it, '
        "e.g. lycoris-lora, in the interpreter that runs sd-scripts)",
    ),
    _sig(
        "model-not-found",
        r"model is not found as a file or in Hugging Face",
        "the base model (pretrained_model_name_or_path) was not found",
        "point pretrained_model_name_or_path at an existing .safetensors file, a diffusers "
        "folder, or a Hugging Face repo id available offline",
    ),
    _sig(
        "tokenizer-offline",
        # offline, transformers' CLIP tokenizer gets a None vocab path and fails far from the cause
        r"tokenization_clip\.py.{0,3000}?expected str, bytes or os\.PathLike object, not NoneType"
        r"|Max retries exceeded.{0,400}?huggingface\.co|huggingface\.co.{0,400}?Max retries exceeded|"
        r"couldn't connect to 'https://huggingface\.co'"
        r"|OfflineModeIsEnabled|LocalEntryNotFoundError",
        "a tokenizer (or model file) had to come from the Hugging Face Hub, which was not "
        "reachable",
        TOKENIZER_FIX,
    ),
    _sig(
        "missing-package",
        r"(?:ModuleNotFoundError|ImportError): No module named '([\w.]+)'",
        "a Python package is missing from the interpreter that runs sd-scripts",
        "install sd-scripts' requirements in its venv (pip install -r requirements.txt), or "
        "pass --python with an interpreter that has them",
    ),
    _sig(
        "wrong-architecture",
        r"Error\(s\) in loading state_dict for \w+",
        "the base model's architecture does not match the script (an SDXL model with "
        "train_network.py, SD1 with sdxl_train_network.py, or SD2 without v2 = true)",
        "check pretrained_model_name_or_path and the model kind (kohyagen config --model)",
    ),
    _sig(
        "config-not-found",
        # read_config_from_file (train_util.py:4740-4742) logs this and exits 1
        r"\S+\.toml not found\.",
        "kohya could not find the training config file",
        "pass an existing file; kohya adds .toml to the name when it is missing",
    ),
    _sig(
        "dataset-config-invalid",
        r"Invalid user config|voluptuous\.error\.\w+",
        "kohya rejected the dataset config",
        "run `kohyagen lint` on the dataset config and fix the keys it names",
    ),
    _sig(
        "resolution-missing",
        r"resolution is required",
        "no resolution is set",
        'set resolution = "512" (SD1.5) or "1024" (SDXL) in the training config',
    ),
    _sig(
        "resolution-type",
        # prepare_dataset_args splits resolution as text (train_util.py:5408-5414)
        r"'int' object has no attribute 'split'",
        "a value kohya splits as text (usually resolution) was written as a number",
        'write resolution as a string: resolution = "512"',
    ),
    _sig(
        "image-too-large",
        r"image too large, but cropping and bucketing are disabled",
        "an image is larger than the resolution while bucketing and cropping are off",
        "set enable_bucket = true (or random_crop = true)",
    ),
    _sig(
        "min-bucket-reso",
        r"min_bucket_reso must be equal or less than resolution",
        "min_bucket_reso is above the resolution",
        "lower min_bucket_reso (256 is usual)",
    ),
    _sig(
        "bucket-steps",
        r"bucket_reso_steps is \d+\. it must be divisible by \d+",
        "bucket_reso_steps is not a multiple of 64 (32 for SDXL)",
        "set bucket_reso_steps = 64",
    ),
    _sig(
        "full-fp16",
        r"full_fp16 requires mixed precision",
        'full_fp16 needs mixed_precision = "fp16"',
        'set mixed_precision = "fp16" or remove full_fp16',
    ),
    _sig(
        "fp8-base",
        r"fp8_base requires mixed precision",
        "fp8_base needs fp16 or bf16 mixed precision",
        'set mixed_precision = "bf16" (or "fp16") or remove fp8_base',
    ),
    _sig(
        "fp16-on-cpu",
        r"fp16 mixed precision requires a GPU|Torch not compiled with CUDA enabled"
        r"|No CUDA GPUs are available|Found no NVIDIA driver",
        "the run needs a GPU but none is usable",
        'run on a machine with a CUDA GPU, or set mixed_precision = "no" for a CPU test run',
    ),
    _sig(
        "sdxl-te-cache",
        r"network for Text Encoder cannot be trained with caching Text Encoder outputs",
        "cache_text_encoder_outputs is on while the text encoder is trained",
        "set network_train_unet_only = true, or turn cache_text_encoder_outputs off",
    ),
    _sig(
        "cache-latents-augmentation",
        r"when caching latents, either color_aug or random_crop cannot be used",
        "cached latents cannot be combined with color_aug or random_crop",
        "turn off cache_latents, or color_aug and random_crop",
    ),
    _sig(
        "adaptive-noise",
        r"adaptive_noise_scale requires noise_offset",
        "adaptive_noise_scale is set without noise_offset",
        "set noise_offset (e.g. 0.05) or remove adaptive_noise_scale",
    ),
    _sig(
        "nan-latents",
        r"NaN detected in latents",
        "the VAE produced NaN latents (a broken image, or the VAE overflowing in fp16)",
        "check the image named in the message; for SDXL set no_half_vae = true or use an "
        "fp16-fixed VAE",
    ),
    _sig(
        "disk-full",
        r"No space left on device",
        "the disk is full",
        "free space where output_dir and the run folder are, or prune old checkpoints "
        "(kohyagen pick --prune)",
    ),
)

# the watcher searches the live output for it: one rank out of memory stops the whole group
OUT_OF_MEMORY = SIGNATURES[0].pattern
