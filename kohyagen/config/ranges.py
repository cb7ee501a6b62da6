"""Numeric ranges of kohya options: one table that `--set` and lint both use.

kohya's argparse types most numbers as int or float and checks no range, so a batch
size of 0 divides by zero when it computes the steps, a NaN learning rate trains a
network of NaNs, and epochs <= 0 save nothing. check_option_value() names the
problem in plain words; it knows nothing of files or TOML, so it stays torch-free
and cheap to call from anywhere.
"""

from __future__ import annotations

from kohyagen.validate import number_problem

# key: (low, low is excluded, high). None: no bound on that side.
_POSITIVE = (0.0, True, None)  # finite and > 0
_AT_LEAST_ONE = (1, False, None)
_NON_NEGATIVE = (0, False, None)
_FRACTION = (0.0, False, 1.0)

RANGES: dict[str, tuple[float | None, bool, float | None]] = {
    "learning_rate": _POSITIVE,
    "unet_lr": _POSITIVE,
    "text_encoder_lr": _POSITIVE,
    "network_alpha": _POSITIVE,
    "max_train_epochs": _AT_LEAST_ONE,
    "max_train_steps": _AT_LEAST_ONE,
    "train_batch_size": _AT_LEAST_ONE,
    "batch_size": _AT_LEAST_ONE,
    "network_dim": _AT_LEAST_ONE,
    "gradient_accumulation_steps": _AT_LEAST_ONE,
    "save_every_n_epochs": _AT_LEAST_ONE,
    "save_every_n_steps": _AT_LEAST_ONE,
    "num_repeats": _AT_LEAST_ONE,
    "max_data_loader_n_workers": _NON_NEGATIVE,
    "keep_tokens": _NON_NEGATIVE,
    "lr_warmup_steps": _NON_NEGATIVE,
    "min_snr_gamma": _POSITIVE,
    "noise_offset": _NON_NEGATIVE,
    "max_grad_norm": _NON_NEGATIVE,
    "min_bucket_reso": _AT_LEAST_ONE,
    "max_bucket_reso": _AT_LEAST_ONE,
    "bucket_reso_steps": _AT_LEAST_ONE,
    "network_dropout": _FRACTION,
    "caption_dropout_rate": _FRACTION,
    "caption_tag_dropout_rate": _FRACTION,
    "validation_split": _FRACTION,
}


def check_option_value(key: str, value: object) -> str | None:
    """The problem with value for kohya option key, in plain words; None when it is fine
    (or when the key has no numeric range, or the value is not a number: the schema
    checks types)."""
    bounds = RANGES.get(key)
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, low_open, high = bounds
    return number_problem(value, key, low=low, high=high, low_open=low_open)
