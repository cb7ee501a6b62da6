"""Captions as kohya reads and varies them: the caption file, wildcards, dropout, shuffling
with kept tokens, token warmup, prefix and suffix."""

from __future__ import annotations

import math
import os
import random
import re
from pathlib import Path

from kohyagen.errors import DatasetError
from kohyagen.trainer.dataset_spec import SubsetSpec


def read_caption(image: Path, subset: SubsetSpec) -> str:
    """The caption file's first line (every non-empty line, joined by newlines, with
    enable_wildcard), else the class tokens. As kohya, `name_cx_cy_w_h.png` (a face box in
    the name) also finds `name.txt`."""
    candidates = [image.with_suffix(subset.caption_extension)]
    tokens = image.stem.split("_")
    # face-box names share one caption: kohya strips the four numbers to find it
    if len(tokens) >= 5:
        candidates.append(image.with_name("_".join(tokens[:-4]) + subset.caption_extension))
    for caption_file in candidates:
        # os.path.isfile as kohya (False for a name too long to exist; Path.is_file raises)
        if not os.path.isfile(caption_file):
            continue
        try:
            raw = caption_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                "caption file is not UTF-8 text",
                path=caption_file,
                hint="save it as UTF-8 (kohyagen dataset prepare converts captions)",
            ) from exc
        lines = [line.strip() for line in raw.splitlines()]
        if subset.enable_wildcard:
            # each line is one caption variant; a random one is drawn per step
            text = "\n".join(line for line in lines if line)
        else:
            text = lines[0] if lines else ""
        # kohya asserts on an empty caption (train_util.py:1946-1970): fail before training
        if not text:
            raise DatasetError(
                "caption file is empty",
                path=caption_file,
                hint="write a caption on its first line or delete the file",
            )
        return text
    # no caption file: the folder's class tokens, else an empty caption, as kohya
    return subset.class_tokens or ""


def expand_wildcards(caption: str, rng: random.Random) -> str:
    """enable_wildcard: one random line of a multi-line caption, and each `{a|b|c}` replaced
    by one of its options; `{{` and `}}` stand for literal braces."""
    if "\n" in caption:
        caption = rng.choice(caption.split("\n"))
    open_mark, close_mark = "\x00", "\x01"  # cannot occur in a text caption file
    caption = caption.replace("{{", open_mark).replace("}}", close_mark)
    caption = re.sub(r"\{([^}]+)\}", lambda m: rng.choice(m.group(1).split("|")), caption)
    return caption.replace(open_mark, "{").replace(close_mark, "}")


def warmup_steps(subset: SubsetSpec, max_train_steps: int) -> int:
    """token_warmup_step: a step count, or below 1 a fraction of the run (kohya)."""
    value = subset.token_warmup_step
    # kohya floors the fraction, so a short run can have a warmup of 0 steps
    return math.floor(value * max_train_steps) if value < 1 else int(value)


def process_caption(
    caption: str,
    subset: SubsetSpec,
    epoch: int,
    rng: random.Random,
    *,
    step: int = 0,
    max_train_steps: int = 0,
) -> str:
    """kohya's caption pipeline for one training sample: prefix and suffix, caption
    dropout, wildcards, then (with shuffle, tag dropout or token warmup) the tags split
    into kept head / varying middle / kept tail, the middle cut short during token warmup,
    shuffled and tag-dropped; finally the secondary separator becomes the separator."""
    if subset.caption_prefix:
        caption = subset.caption_prefix + " " + caption
    if subset.caption_suffix:
        caption = caption + " " + subset.caption_suffix
    # kohya's order (train_util.py, process_caption): prefix and suffix are added first, so
    # a dropped caption drops them too
    if subset.caption_dropout_rate > 0 and rng.random() < subset.caption_dropout_rate:
        return ""
    every = subset.caption_dropout_every_n_epochs
    # every Nth epoch trains uncaptioned: the LoRA also learns the unconditional image
    if every > 0 and epoch % every == 0:
        return ""
    wild = subset.enable_wildcard
    caption = expand_wildcards(caption, rng) if wild else caption.split("\n")[0]
    warmup = warmup_steps(subset, max_train_steps) if subset.token_warmup_step else 0
    if subset.shuffle_caption or warmup or subset.caption_tag_dropout_rate > 0:
        sep = subset.caption_separator
        marker = subset.keep_tokens_separator
        tail: list[str] = []
        if marker and marker in caption:
            # "kept head ||| varying tags ||| kept tail"
            head_part, _, flex_part = caption.partition(marker)
            if marker in flex_part:
                flex_part, _, tail_part = flex_part.partition(marker)
                tail = [t.strip() for t in tail_part.split(sep) if t.strip()]
            fixed = [t.strip() for t in head_part.split(sep) if t.strip()]
            rest = [t.strip() for t in flex_part.split(sep) if t.strip()]
        else:
            tokens = [t.strip() for t in caption.strip().split(sep)]
            fixed, rest = tokens[: subset.keep_tokens], tokens[subset.keep_tokens :]
        # token warmup grows the varying tags from token_warmup_min to all of them
        if warmup and step < warmup:
            lo = subset.token_warmup_min
            rest = rest[: math.floor(step * ((len(rest) - lo) / warmup)) + lo]
        if subset.shuffle_caption:
            rng.shuffle(rest)
        # tag dropout after the shuffle; the kept head and tail are never dropped
        if subset.caption_tag_dropout_rate > 0:
            rest = [t for t in rest if rng.random() >= subset.caption_tag_dropout_rate]
        caption = ", ".join(fixed + rest + tail)
    # last, so a secondary separator keeps its group together through shuffle and dropout
    if subset.secondary_separator:
        caption = caption.replace(subset.secondary_separator, subset.caption_separator)
    return caption
