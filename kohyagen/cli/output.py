"""Terminal and JSON output shared by the commands."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import click

from kohyagen.findings import Finding, Severity, sort_findings

_STYLE = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


# A file name that is not valid UTF-8 reaches Python as lone surrogates
# (surrogateescape); printed as they are, they would make the output invalid UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def emit_json(data: Any) -> None:
    """Print data as JSON on stdout (paths and other objects become strings).

    Always valid UTF-8: lone surrogates are written as \\udcXX escapes, which JSON
    allows and which json.loads turns back into the same name (os.fsencode gives the
    original bytes)."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    click.echo(text)


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def stdout_console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=not sys.stdout.isatty())


def print_findings(findings: list[Finding], *, title: str | None = None) -> None:
    """A readable table of findings: severity, file, key, message and fix."""
    from rich.markup import escape
    from rich.table import Table

    console = stdout_console()
    if not findings:
        console.print("[green]no problems found[/green]")
        return
    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("severity")
    table.add_column("file", overflow="fold")
    table.add_column("key", overflow="fold")
    table.add_column("problem", overflow="fold")
    table.add_column("fix", overflow="fold")
    for f in sort_findings(findings):
        style = _STYLE[f.severity]
        table.add_row(
            f"[{style}]{f.severity.value}[/{style}]",
            # Findings quote TOML ("[general]"), which rich would take for markup.
            escape(f.file or ""),
            escape(f.key or ""),
            escape(f.message),
            escape(f.fix or ""),
        )
    console.print(table)
    counts = {s: sum(1 for f in findings if f.severity is s) for s in Severity}
    console.print(
        f"{counts[Severity.ERROR]} error(s), {counts[Severity.WARNING]} warning(s), "
        f"{counts[Severity.INFO]} info"
    )
