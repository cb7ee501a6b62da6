"""The `kohyagen dataset check` report on a terminal: the summary, folder and bucket
tables, top tags, findings folded per code, and notes.

Separate from the command module (dataset_cmd) because it only draws a DatasetReport;
the commands parse options and call the library.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kohyagen.cli.output import print_findings, stdout_console
from kohyagen.findings import Finding, Severity

if TYPE_CHECKING:
    from kohyagen.dataset.check import DatasetReport

__all__ = ["ROWS_PER_CODE", "print_report"]


def _rel(path: str | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        # Windows: a path on another drive has no relative form
        return path
    # a file outside the dataset (a --reg folder) keeps its full path, to be unambiguous
    return path if rel.startswith("..") else rel


# a thousand "missing caption" rows hide the one finding that matters; --json has them all
ROWS_PER_CODE = 8


def _trim(findings: Iterable[Finding], root: Path) -> tuple[list[Finding], int]:
    """At most ROWS_PER_CODE rows per finding code, plus one row saying how many more."""
    by_code: dict[str, list[Finding]] = {}
    for f in findings:
        by_code.setdefault(f.code, []).append(dataclasses.replace(f, file=_rel(f.file, root)))
    rows: list[Finding] = []
    hidden = 0
    for same in by_code.values():
        rows += same[:ROWS_PER_CODE]
        if len(same) > ROWS_PER_CODE:
            more = len(same) - ROWS_PER_CODE
            hidden += more
            # the fold row keeps the code and severity, so the table still sorts and counts it
            rows.append(
                dataclasses.replace(
                    same[ROWS_PER_CODE],
                    file=None,
                    line=None,
                    key=None,
                    message=f"... {more} more files with {same[0].code} (--json lists them)",
                    # a fix naming one hidden file ("write a.txt") is not the fix of them all
                    fix=_shared_fix(same[ROWS_PER_CODE:]),
                )
            )
    return rows, hidden


def _shared_fix(findings: list[Finding]) -> str | None:
    fixes = {f.fix for f in findings}
    return fixes.pop() if len(fixes) == 1 else None


def _summary_table(report: DatasetReport) -> Any:
    """The dataset's numbers, one row each."""
    from rich.table import Table

    summary = Table(title=f"dataset {report.root}", show_header=False, expand=False)
    summary.add_column(style="bold")
    summary.add_column()
    s = report.bucket_settings
    rows = [
        ("layout", report.kind.replace("_", " ")),
        (
            "model",
            f"{report.model} (resolution {s.resolution[0]}, buckets {s.min_reso}–"
            f"{s.max_reso} step {s.steps}{', no upscale' if s.no_upscale else ''})",
        ),
        ("images", str(report.image_count)),
        ("images × repeats", str(report.images_x_repeats)),
        ("regularisation images", str(report.reg_image_count)),
        ("steps per epoch", f"{report.steps_per_epoch} at batch size {report.batch_size}"),
        ("caption extension", report.caption_extension),
        ("size", report.size_advice),
        ("check", "deep (every pixel decoded)" if report.deep else "fast (headers)"),
    ]
    for key, value in rows:
        # most datasets have no reg images; a 0 row would suggest they are missing
        if key == "regularisation images" and not report.reg_image_count:
            continue
        summary.add_row(key, value)
    return summary


def _print_tables(console: Any, report: DatasetReport) -> None:
    """The folders table and the bucket histogram, when there is anything to show."""
    from rich.table import Table

    if report.subsets:
        folders = Table(title="folders", expand=False)
        for col in ("folder", "repeats", "class tokens", "images", "× repeats", "captions"):
            folders.add_column(col, justify="right" if col[0] in "r×ic" else "left")
        for sub in report.subsets:
            name = sub.name + (" (reg)" if sub.is_reg else "")
            folders.add_row(
                name,
                str(sub.repeats),
                sub.class_tokens,
                str(sub.image_count),
                str(sub.images_x_repeats),
                str(sub.captioned),
            )
        console.print(folders)

    if report.buckets:
        hist = Table(title="buckets (samples per epoch)", expand=False)
        hist.add_column("bucket")
        hist.add_column("samples", justify="right")
        hist.add_column("")
        # bars scaled to the fullest bucket; at least one block, so a bucket of 1 still shows
        top = max(report.buckets.values())
        for key, n in report.buckets.items():
            hist.add_row(key, str(n), "█" * max(1, round(30 * n / top)))
        console.print(hist)


def print_report(report: DatasetReport) -> None:
    """The check's summary, folder and bucket tables, top tags, findings and notes."""
    console = stdout_console()
    root = Path(report.root)
    console.print(_summary_table(report))
    _print_tables(console, report)
    if report.tag_frequencies:
        # the top tags show at a glance whether the trigger and the subject are captioned
        tags = list(report.tag_frequencies.items())[:15]
        console.print("top tags: " + ", ".join(f"{t} ({n})" for t, n in tags))

    shown, hidden = _trim(report.findings, root)
    print_findings(shown, title="findings")
    if hidden:
        counts = {sev: sum(f.severity is sev for f in report.findings) for sev in Severity}
        console.print(
            f"(rows for {hidden} more files folded; all of them: {counts[Severity.ERROR]} "
            f"error(s), {counts[Severity.WARNING]} warning(s), {counts[Severity.INFO]} info; "
            "--json lists every one)"
        )
    for note in report.notes:
        console.print(f"[dim]note: {note}[/dim]")
