"""Names of kohya options: did-you-mean suggestions and where a key belongs.

Shared by `kohyagen lint` and `kohyagen config --set`. The key sets themselves come
from the JSON Schemas (kohyagen.config.schema); this module only adds the mistakes people
commonly make, which difflib alone does not catch (`epochs` is not close to
`max_train_epochs` as a string).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import cache

from kohyagen.config.schema import DATASET_CONFIG, load_schema, training_properties

# Common wrong names in a --config_file -> the kohya option meant.
TRAINING_ALIASES: dict[str, str] = {
    "batch_size": "train_batch_size",
    "batch": "train_batch_size",
    "bs": "train_batch_size",
    "epoch": "max_train_epochs",  # kohya_ss GUI's name for it
    "epochs": "max_train_epochs",
    "num_epochs": "max_train_epochs",
    "max_epochs": "max_train_epochs",
    "train_epochs": "max_train_epochs",
    "steps": "max_train_steps",
    "max_steps": "max_train_steps",
    "train_steps": "max_train_steps",
    "lr": "learning_rate",
    "unet_learning_rate": "unet_lr",
    "text_encoder_learning_rate": "text_encoder_lr",
    "te_lr": "text_encoder_lr",
    "optimizer": "optimizer_type",
    "optim": "optimizer_type",
    "scheduler": "lr_scheduler",
    "warmup_steps": "lr_warmup_steps",
    "dim": "network_dim",
    "rank": "network_dim",
    "lora_rank": "network_dim",
    "lora_dim": "network_dim",
    "alpha": "network_alpha",
    "lora_alpha": "network_alpha",
    "model": "pretrained_model_name_or_path",
    "base_model": "pretrained_model_name_or_path",
    "model_path": "pretrained_model_name_or_path",
    "pretrained_model": "pretrained_model_name_or_path",
    "output_path": "output_dir",
    "output_folder": "output_dir",
    "log_dir": "logging_dir",
    "logs_dir": "logging_dir",
    "precision": "mixed_precision",
    "data_dir": "train_data_dir",
    "image_dir": "train_data_dir",
    "dataset_dir": "train_data_dir",
    "repeats": "dataset_repeats",
    "num_repeats": "dataset_repeats",
    "save_every_n_epoch": "save_every_n_epochs",
    "save_every_epochs": "save_every_n_epochs",
    "save_format": "save_model_as",
    "checkpointing": "gradient_checkpointing",
    "grad_checkpointing": "gradient_checkpointing",
    "grad_accum_steps": "gradient_accumulation_steps",
    "gradient_accumulation": "gradient_accumulation_steps",
    "caption_ext": "caption_extension",
    "clip_skip_layers": "clip_skip",
    "bucket": "enable_bucket",
    "enable_buckets": "enable_bucket",
    "noise_offset_strength": "noise_offset",
    "snr_gamma": "min_snr_gamma",
    "network_type": "network_module",
    "module": "network_module",
    "sample_prompt": "sample_prompts",
    "sample_every_n_epoch": "sample_every_n_epochs",
    "validation_ratio": "validation_split",
}

# The same for dataset_config.toml ([general], [[datasets]], [[datasets.subsets]]).
DATASET_ALIASES: dict[str, str] = {
    # kohya renames these between the two files; the wrong file's name is the usual slip
    "train_batch_size": "batch_size",
    "repeats": "num_repeats",
    "dataset_repeats": "num_repeats",
    "train_data_dir": "image_dir",
    "data_dir": "image_dir",
    "caption_ext": "caption_extension",
    # kohya's old misspelling works on the command line only; voluptuous rejects it here
    "caption_extention": "caption_extension",
    "bucket": "enable_bucket",
    "trigger": "class_tokens",
    "trigger_word": "class_tokens",
    "class_token": "class_tokens",
    "instance_prompt": "class_tokens",
}


def suggest(
    key: str, candidates: Iterable[str], aliases: dict[str, str] | None = None
) -> str | None:
    """The option most likely meant by an unknown key, or None."""
    candidates = list(candidates)
    lowered = key.strip().lower().replace("-", "_")
    # a known alias beats difflib: `epochs` is closer to `epoch` options by spelling than meaning
    if aliases and lowered in aliases and aliases[lowered] in candidates:
        return aliases[lowered]
    # kohya's options are case-sensitive: `Learning_Rate` is just unknown to it
    if lowered in candidates and lowered != key:
        return lowered
    # 0.75 keeps one-letter typos and drops far guesses that would mislead more than help
    close = difflib.get_close_matches(lowered, candidates, n=1, cutoff=0.75)
    return close[0] if close else None


@cache
def dataset_level_keys() -> dict[str, frozenset[str]]:
    """Keys kohya accepts at each level of dataset_config.toml (all dataset styles)."""
    schema = load_schema(DATASET_CONFIG)
    defs = schema["$defs"]
    datasets: set[str] = set()
    subsets: set[str] = set()
    # a key is allowed at a level when any dataset style allows it there; the style rules
    # in lint_dataset catch the mixes
    for name, table in defs.items():
        if name.startswith("dataset_"):
            datasets |= set(table["properties"]) - {"subsets"}
        elif name.startswith("subset_"):
            subsets |= set(table["properties"])
    return {
        "general": frozenset(defs["general"]["properties"]),
        "datasets": frozenset(datasets),
        "subsets": frozenset(subsets),
    }


def all_dataset_keys() -> frozenset[str]:
    levels = dataset_level_keys()
    return levels["general"] | levels["datasets"] | levels["subsets"]


def cli_only_dataset_keys() -> frozenset[str]:
    """Dataset-related options kohya reads only from the command line / --config_file."""
    return frozenset(load_schema(DATASET_CONFIG).get("x-cli-only-keys", ()))


def training_keys(script: str) -> frozenset[str]:
    return frozenset(training_properties(script))
