"""Where each key of a TOML file is written: line and column, for `FILE:LINE:COL` findings.

tomllib gives values, not places, so the text is scanned line by line the way TOML is
laid out: `[table]` and `[[array.of.tables]]` headers, then `key = value` lines.
Multi-line strings and arrays are skipped over so that their contents are not taken
for keys. Labels use the finding keys' spelling: `general.resolution`,
`datasets[0].subsets[1].image_dir`, and for a training file the bare option name.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from kohyagen.findings import Finding

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^(\s*)("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)(\s*\.\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+))*\s*=""")
Place = tuple[int, int]


def _parts(name: str) -> list[str]:
    return [p.strip().strip("\"'") for p in name.split(".")]


class _Scanner:
    """Keeps the label of the current table while the headers go by."""

    def __init__(self) -> None:
        self.arrays: dict[str, int] = {}  # label of an array of tables -> its last index
        self.table = ""

    def header(self, name: str, is_array: bool) -> str:
        label = ""
        parts = _parts(name)
        for i, part in enumerate(parts):
            path = f"{label}.{part}" if label else part
            last = i == len(parts) - 1
            if last and is_array:
                self.arrays[path] = self.arrays.get(path, -1) + 1
            label = f"{path}[{self.arrays[path]}]" if path in self.arrays else path
        self.table = label
        return label


def _bracket_depth(value: str) -> int:
    """Open [ minus closed ] outside strings and comments (a multi-line array stays open)."""
    depth, quote = 0, ""
    for ch in value:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
    return depth


def locate_keys(text: str) -> dict[str, Place]:
    """label -> (line, column), both 1-based; tables are labelled too (`datasets[0]`)."""
    out: dict[str, Place] = {}
    scanner = _Scanner()
    depth, in_string = 0, ""
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string:
            if line.count(in_string) % 2:
                in_string = ""
            continue
        if depth > 0:
            depth += _bracket_depth(line)
            continue
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            label = scanner.header(header.group(2), header.group(1) == "[[")
            out.setdefault(label, (number, line.index("[") + 1))
            continue
        key = _KEY.match(line)
        if not key:
            continue
        name = ".".join(_parts(line[: key.end() - 1]))
        label = f"{scanner.table}.{name}" if scanner.table else name
        out[label] = (number, len(key.group(1)) + 1)
        value = line[key.end() :]
        for quote in ('"""', "'''"):
            if value.count(quote) % 2:
                in_string = quote
        depth = _bracket_depth(value) if not in_string else 0
    return out


def _training_place(places: dict[str, Place], key: str) -> Place | None:
    """A flat option's place: kohya flattens the sections and keeps the last one."""
    hits = [p for label, p in places.items() if label.rsplit(".", 1)[-1] == key and "[" not in label]
    return max(hits) if hits else None


def place_of(places: dict[str, Place], key: str | None) -> Place:
    """The key's place, else the nearest enclosing table's, else the top of the file."""
    if not key:
        return (1, 1)
    label = key
    while label:
        if label in places:
            return places[label]
        if f"{label}[0]" in places:  # an array of tables: its first header
            return places[f"{label}[0]"]
        found = _training_place(places, label)
        if found is not None:
            return found
        label = label.rsplit(".", 1)[0] if "." in label else ""
    return (1, 1)


def with_places(findings: list[Finding], texts: dict[str, str]) -> list[Finding]:
    """Each finding about one of these files gains the line and column of its key."""
    located = {file: locate_keys(text) for file, text in texts.items()}
    out = []
    for f in findings:
        places = located.get(f.file or "")
        if places is None or f.line is not None:
            out.append(f)
            continue
        line, column = place_of(places, f.key)
        out.append(dataclasses.replace(f, line=line, column=column))
    return out


def texts_of(paths: list[Path]) -> dict[str, str]:
    out = {}
    for path in paths:
        try:
            out[str(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
    return out
