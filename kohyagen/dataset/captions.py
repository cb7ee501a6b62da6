"""Caption files as kohya reads them, and the edits `dataset prepare` makes to them.

kohya opens `<image stem><caption_extension>` as UTF-8 and uses only its first line,
stripped; an empty file makes it fail an assertion. Tags are the comma-separated parts
of that line (the tagger's ", " separator; kohya's caption_separator default is ",").
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from kohyagen import safe_io
from kohyagen.dataset.layout import IMAGE_EXTENSIONS
from kohyagen.errors import UsageError
from kohyagen.validate import caption_extension_problem, require

BOM = "\ufeff"


@dataclass(frozen=True)
class CaptionRead:
    path: Path
    text: str | None  # first line, stripped; None when the file could not be decoded
    no_lines: bool = False  # nothing at all: kohya fails an assertion on it
    blank: bool = False  # the first line is blank: kohya trains with an empty caption
    not_utf8: bool = False
    has_bom: bool = False
    extra_lines: int = 0  # non-blank lines after the first, which kohya ignores
    error: str | None = None  # OS error reading it

    @property
    def tags(self) -> list[str]:
        return split_tags(self.text or "")


def read_bytes(path: Path) -> bytes:
    """The file's bytes; OSError for anything but a regular file (a FIFO would block, a
    link to /dev/zero never end) and for a caption larger than any real one."""
    return safe_io.read_bytes(path)


def read_caption(path: Path) -> CaptionRead:
    try:
        raw = read_bytes(path)
    except OSError as exc:
        return CaptionRead(path, None, error=exc.strerror or str(exc))
    try:
        # strict UTF-8: kohya opens captions with encoding="utf-8" and fails on anything else
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return CaptionRead(path, None, not_utf8=True)
    has_bom = text.startswith(BOM)
    lines = text.splitlines()
    # kohya reads only the first line (train_util.py:2066-2081) unless enable_wildcard
    first = lines[0].strip() if lines else ""
    if has_bom:
        # kohya keeps the BOM as a character of the caption; here it is only noted, and prepare strips it
        first = first.lstrip(BOM).strip()
    extra = sum(1 for line in lines[1:] if line.strip())
    return CaptionRead(
        path,
        first,
        no_lines=not lines,
        blank=bool(lines) and not first,
        has_bom=has_bom,
        extra_lines=extra,
    )


def normalize_caption_extension(ext: str) -> str:
    """ ".txt" from "txt" or " .txt"; refuses what would overwrite the images themselves."""
    ext = ext.strip()
    if not ext.startswith("."):
        ext = "." + ext
    # a caption written as `x.png` would replace the image
    if ext == "." or ext.lower() in IMAGE_EXTENSIONS:
        raise UsageError(f"'{ext}' cannot be a caption extension", hint="use .txt or .caption")
    # "/../evil.txt" would send every caption to one file outside the dataset
    require(caption_extension_problem(ext), hint="use .txt or .caption")
    return ext


def first_line(path: Path) -> str | None:
    """The caption kohya trains with, leniently decoded (for counts and hints, not checks).

    None when the file cannot be read; "" when it holds no text.
    """
    try:
        text = read_bytes(path).decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = text.splitlines()
    return lines[0].strip() if lines else ""


def decode_caption_bytes(raw: bytes) -> str:
    """Best-effort text of a caption in any common encoding (prepare rewrites it as UTF-8)."""
    # Windows Notepad's "Unicode" is UTF-16 with a BOM
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # the usual legacy encoding of hand-written captions; never fails
        return raw.decode("cp1252", errors="replace")


def split_tags(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def repeated_tags(tags: list[str]) -> list[str]:
    counts = Counter(t.lower() for t in tags)
    return sorted(t for t, n in counts.items() if n > 1)


def contains_trigger(text: str, trigger: str) -> bool:
    """The trigger as a whole tag or as whole words inside the caption (case-insensitive)."""
    trig = trigger.strip().lower()
    if not trig:
        return True
    if any(t.lower() == trig for t in split_tags(text)):
        return True
    # whole words only: `sks` must not be found inside `tasks`
    return re.search(r"(?<!\w)" + re.escape(trig) + r"(?!\w)", text.lower()) is not None


def trigger_first(text: str, trigger: str) -> str:
    """The caption with the trigger as its first tag, any other copy of that tag removed."""
    trig = trigger.strip()
    tags = [t for t in split_tags(text) if t.lower() != trig.lower()]
    return ", ".join([trig, *tags])


def tag_frequencies(captions: list[str]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for text in captions:
        # once per caption, as kohya's ss_tag_frequency counts
        counts.update(dict.fromkeys(split_tags(text), 1))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
