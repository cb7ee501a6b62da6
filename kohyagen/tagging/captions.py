"""From tag probabilities to caption text, and writing captions without losing any.

Caption order: trigger word, always-first tags (when predicted), the rating (when
asked), character tags, then general tags, each group by descending confidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kohyagen import safe_io
from kohyagen.atomic import TEMP_SUFFIX, write_text_atomic
from kohyagen.tagging.models import (
    CATEGORY_CHARACTER,
    CATEGORY_GENERAL,
    CATEGORY_RATING,
    TagSet,
)

SEPARATOR = ", "
MODES = ("skip", "append", "overwrite")


@dataclass(frozen=True)
class CaptionOptions:
    # kohya's tagger's --thresh default (tag_images_by_wd14_tagger.py)
    threshold: float = 0.35
    # higher than kohya's (which reuses --thresh): character tags are the ones a LoRA should
    # not learn by accident (and kohya's tagger at 48d368f crashes when one passes)
    character_threshold: float = 0.85
    trigger: str | None = None
    undesired_tags: tuple[str, ...] = ()
    always_first: tuple[str, ...] = ()
    keep_underscores: bool = False
    rating: bool = False


def tag_key(tag: str) -> str:
    """What two spellings of one tag share: case, spaces and underscores don't matter."""
    return " ".join(tag.replace("_", " ").lower().split())


def display_tag(name: str, keep_underscores: bool) -> str:
    # Short tags are mostly emoticons (^_^, o_o) where the underscore is the mouth.
    if keep_underscores or len(name) <= 3:
        return name
    return name.replace("_", " ")


def split_tags(text: str | None) -> list[str]:
    if not text:
        return []
    # a hand-written caption may put tags on lines: each line is a tag list too
    parts = text.replace("\n", ",").split(",")
    return [p.strip() for p in parts if p.strip()]


class TagSelector:
    """Turns one image's probabilities into its ordered tag list."""

    def __init__(self, tags: TagSet, options: CaptionOptions) -> None:
        self.options = options
        self.general = tags.indices(CATEGORY_GENERAL)
        self.character = tags.indices(CATEGORY_CHARACTER)
        self.rating = tags.indices(CATEGORY_RATING)
        self.display = [display_tag(n, options.keep_underscores) for n in tags.names]
        undesired = {tag_key(t) for t in options.undesired_tags}
        self.wanted = np.array([tag_key(n) not in undesired for n in tags.names], dtype=bool)
        self.first_order = {tag_key(t): i for i, t in enumerate(options.always_first)}

    def _above(self, probs: np.ndarray, indices: np.ndarray, threshold: float) -> list[int]:
        if not len(indices):
            return []
        scores = probs[indices]
        # >= as in kohya's tagger: a tag exactly at the threshold is kept
        keep = indices[(scores >= threshold) & self.wanted[indices]]
        # Stable sort on the negated score: ties keep the tag list's order.
        return keep[np.argsort(-probs[keep], kind="stable")].tolist()

    def select(self, probs: np.ndarray) -> list[str]:
        opts = self.options
        characters = self._above(probs, self.character, opts.character_threshold)
        general = self._above(probs, self.general, opts.threshold)
        rated: list[int] = []
        if opts.rating and len(self.rating):
            # kohya's tagger adds only the most probable rating, never several
            top = int(self.rating[int(np.argmax(probs[self.rating]))])
            if self.wanted[top]:
                rated = [top]
        body = [self.display[i] for i in rated + characters + general]
        first = sorted(
            (t for t in body if tag_key(t) in self.first_order),
            key=lambda t: self.first_order[tag_key(t)],
        )
        # the trigger first, where keep_tokens = 1 holds it in place when kohya shuffles captions
        head = [opts.trigger] if opts.trigger else []
        return dedupe([*head, *first, *body])


def dedupe(tags: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for tag in tags:
        key = tag_key(tag)
        if key and key not in seen:
            seen.add(key)
            out.append(tag)
    return out


def merge_tags(existing: Sequence[str], new: Sequence[str], trigger: str | None) -> list[str]:
    """Append mode: the existing caption first, then only the tags it lacks.

    A trigger word the caption lacks goes in front, where kohya's keep_tokens expects it.
    """
    head = []
    if trigger and tag_key(trigger) not in {tag_key(t) for t in existing}:
        head = [trigger]
    return dedupe([*head, *existing, *new])


def caption_text(tags: Sequence[str]) -> str:
    # kohya's tagger writes the same: tags joined by ", " and one final newline
    return SEPARATOR.join(tags) + "\n"


def read_caption(path: Path) -> str | None:
    """The caption's text, or None when there is none (a missing or blank file)."""
    try:
        # strict UTF-8 (safe_io): a caption in another encoding is the user's, never rewritten
        text = safe_io.read_text(path)
    except FileNotFoundError:
        return None
    # kohya reads UTF-8 with or without a BOM (utf-8-sig would hide it here); a BOM is not
    # part of the first tag, or append would keep "\ufeffsks" and add "sks" again
    text = text.removeprefix("\ufeff")
    return text if text.strip() else None


def has_caption(path: Path) -> bool:
    """Whether a non-blank caption exists (whatever its encoding: it is the user's)."""
    try:
        # bytes, not text: a caption that is not UTF-8 still counts as the user's caption
        return bool(safe_io.read_bytes(path).strip())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return False


def write_atomic(path: Path, text: str) -> None:
    """Replace path with text in one step: readers see the old file or the new one."""
    write_text_atomic(path, text)


def remove_stale_temps(folders: Iterable[Path]) -> int:
    """Delete temp files a killed run left behind; their captions were never replaced."""
    removed = 0
    for folder in folders:
        # only kohyagen's own temp names: nothing a user made can match
        for temp in folder.glob(f".*{TEMP_SUFFIX}"):
            try:
                temp.unlink()
                removed += 1
            except OSError:
                pass
    return removed
