"""Captions as kohya reads and varies them: the caption file, wildcards, dropout, shuffling
with kept tokens, token warmup, prefix and suffix."""

from __future__ import annotations

import random
from pathlib import Path

from kohyagen.errors import DatasetError
from kohyagen.trainer.config import SubsetSpec


def read_caption(image: Path, subset: SubsetSpec) -> str:
    caption_file = image.with_suffix(subset.caption_extension)
    if caption_file.is_file():
        lines = caption_file.read_text(encoding="utf-8").splitlines()
        text = lines[0].strip() if lines else ""
        if not text:
            raise DatasetError(
                "caption file is empty",
                path=caption_file,
                hint="write a caption on its first line or delete the file",
            )
        return text
    return subset.class_tokens or ""


def process_caption(caption: str, subset: SubsetSpec, epoch: int, rng: random.Random) -> str:
    """Caption dropout, tag dropout, shuffling with kept tokens, prefix and suffix."""
    if subset.caption_dropout_rate > 0 and rng.random() < subset.caption_dropout_rate:
        return ""
    every = subset.caption_dropout_every_n_epochs
    if every > 0 and epoch % every == 0:
        return ""
    if subset.caption_prefix:
        caption = subset.caption_prefix + " " + caption
    if subset.caption_suffix:
        caption = caption + " " + subset.caption_suffix
    if subset.shuffle_caption or subset.caption_tag_dropout_rate > 0:
        sep = subset.caption_separator.strip() or subset.caption_separator
        marker = subset.keep_tokens_separator
        if marker and marker in caption:
            # "kept, tags ||| shuffled, tags": the part before the marker never moves.
            head, _, tail = caption.partition(marker)
            fixed = [t.strip() for t in head.split(sep) if t.strip()]
            rest = [t.strip() for t in tail.split(sep)]
        else:
            tokens = [t.strip() for t in caption.split(sep)]
            fixed, rest = tokens[: subset.keep_tokens], tokens[subset.keep_tokens :]
        if subset.caption_tag_dropout_rate > 0:
            rest = [t for t in rest if rng.random() >= subset.caption_tag_dropout_rate]
        if subset.shuffle_caption:
            rng.shuffle(rest)
        caption = ", ".join(t for t in fixed + rest if t)
    return caption
