"""Edge checks of what a user types: names, caption extensions, triggers, numbers.

One place for the rules, so that every command refuses the same things with the same
words (run, config, prepare, tag, estimate, and lint through kohyagen.config.ranges).
Each check returns a plain-words problem, or None when the value is fine; require()
turns a problem into the UsageError (exit 2) the commands raise.
"""

from __future__ import annotations

import math
import re
import unicodedata

from kohyagen.errors import UsageError

# Folder and file names are limited to 255 bytes; kohya appends "-000001.safetensors"
# and kohyagen its temp suffixes, so a name a user picks keeps well under that.
NAME_BYTES = 200
_EXTENSION = re.compile(r"\.[A-Za-z0-9_-]{1,16}")
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif")


def _control(text: str) -> str | None:
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            return f"U+{ord(char):04X}"
    return None


def name_problem(value: str, what: str = "name") -> str | None:
    """Why value cannot be a file or folder name kohyagen creates, or None."""
    if not value or not value.strip():
        return f"the {what} is empty"
    if value != value.strip():
        return f"the {what} starts or ends with a space"
    if any(sep in value for sep in ("/", "\\", "\0")):
        return f"the {what} {value!r} holds a path separator"
    if value in (".", "..") or value.startswith("."):
        return f"the {what} {value!r} starts with a dot (a hidden or parent folder)"
    if (bad := _control(value)) is not None:
        return f"the {what} {value!r} holds a control character ({bad})"
    if len(value.encode("utf-8", "surrogateescape")) > NAME_BYTES:
        return f"the {what} is longer than {NAME_BYTES} bytes"
    return None


def caption_extension_problem(value: str) -> str | None:
    """Why value cannot be a caption extension (a dot and a plain extension), or None."""
    if not _EXTENSION.fullmatch(value or ""):
        return (
            f"{value!r} is not a caption extension: a dot and up to 16 letters, digits, "
            "'-' or '_', with no separators"
        )
    if value.lower() in _IMAGE_EXTENSIONS:
        return f"{value!r} is an image extension: captions would overwrite the images"
    return None


def trigger_problem(value: str) -> str | None:
    """Why value cannot be a trigger word kohya keeps as the first caption token, or None."""
    if not value or not value.strip():
        return "the trigger is empty"
    if "," in value:
        # kohya splits captions on "," (caption_separator) and keep_tokens counts the parts
        return f"the trigger {value!r} holds a comma, which kohya reads as two tags"
    if (bad := _control(value)) is not None:
        return f"the trigger {value!r} holds a control character ({bad}); kohya reads one line"
    return None


def number_problem(
    value: float,
    what: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> str | None:
    """Why value is not a finite number in [low, high] (or (low, high]), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{what} must be a number, got {value!r}"
    if not math.isfinite(value):
        return f"{what} must be a finite number, got {value}"
    if low is not None and (value <= low if low_open else value < low):
        return f"{what} must be {'above' if low_open else 'at least'} {low:g}, got {value:g}"
    if high is not None and value > high:
        return f"{what} must be at most {high:g}, got {value:g}"
    return None


def require(problem: str | None, *, hint: str | None = None) -> None:
    """Raise the UsageError (exit 2) for a problem a check found."""
    if problem is not None:
        raise UsageError(problem, hint=hint)
