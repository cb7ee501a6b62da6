"""Terminal and JSON output shared by the commands."""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Any

import click

from kohyagen.findings import Finding, Severity, sort_by_place

if TYPE_CHECKING:
    from rich.console import Console

_STYLE = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


# A file name that is not valid UTF-8 reaches Python as lone surrogates
# (surrogateescape); printed as they are, they would make the output invalid UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def emit_json(data: Any) -> None:
    """Print data as JSON on stdout (paths and other objects become strings).

    Always valid UTF-8: lone surrogates are written as \\udcXX escapes, which JSON
    allows and which json.loads turns back into the same name (os.fsencode gives the
    original bytes)."""
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", dumps_readable(data))
    click.echo(text)


# Containers this deep and deeper are written on one line.
_FLAT_DEPTH = 2


def dumps_readable(value: Any, depth: int = 0) -> str:
    """JSON with the top two levels indented and each deeper value on one line: a
    finding or an image record per line. json's indent=2 runs in pure Python and was a
    tenth of a `dataset check --json` on 3,000 images; the one-line parts use its C
    encoder."""
    pad = "  " * (depth + 1)
    if depth < _FLAT_DEPTH and isinstance(value, dict) and value:
        items = [f"{pad}{_key(k)}: {dumps_readable(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad[2:] + "}"
    if depth < _FLAT_DEPTH and isinstance(value, (list, tuple)) and value:
        items = [pad + dumps_readable(v, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad[2:] + "]"
    return json.dumps(value, ensure_ascii=False, default=str)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return json.dumps(key, ensure_ascii=False)
    # json's own spelling of a number, bool or None key ("1.5", "true", "null")
    text = json.dumps({key: 0}, ensure_ascii=False, default=str)
    return text[1 : text.rindex(":")]


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def stdout_console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=not sys.stdout.isatty())


def format_finding(f: Finding) -> str:
    """`FILE:LINE:COL: severity[code] key: message (fix: ...)`, one line, never wrapped.

    The compiler-style place lets editors and CI logs jump to the key; a finding about a
    whole file (or an image) has just `FILE:`; one about nothing on disk has no place.
    """
    place = ""
    if f.file:
        place = f"{f.file}:{f.line}:{f.column or 1}: " if f.line else f"{f.file}: "
    key = f" {f.key}:" if f.key else ""
    fix = f" (fix: {f.fix})" if f.fix else ""
    # One finding is one line even when a message quotes a multi-line value.
    text = f"{place}{f.severity.value}[{f.code}]{key} {f.message}{fix}"
    return " ".join(text.splitlines())


def summary_line(findings: list[Finding]) -> str:
    counts = {s: sum(1 for f in findings if f.severity is s) for s in Severity}
    files = len({f.file for f in findings if f.file})
    where = f" in {files} file(s)" if files else ""
    return (
        f"{counts[Severity.ERROR]} error(s), {counts[Severity.WARNING]} warning(s), "
        f"{counts[Severity.INFO]} info{where}"
    )


def print_findings(findings: list[Finding], *, title: str | None = None) -> None:
    """One finding per line, grouped by file in file order, then a summary line.

    Plain click.echo, not a rich table: a pipe or a CI log gets every line whole
    (a table wrapped keys and paths at 80 columns). Colour only on a terminal.
    """
    if title:
        click.echo(f"{title}:")
    if not findings:
        click.echo(click.style("no problems found", fg="green"))
        return
    for f in sort_by_place(findings):
        line = format_finding(f)
        tag = f"{f.severity.value}[{f.code}]"
        click.echo(line.replace(tag, click.style(tag, fg=_STYLE[f.severity]), 1))
    click.echo(summary_line(findings))
