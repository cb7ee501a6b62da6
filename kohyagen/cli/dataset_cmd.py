"""`kohyagen dataset check` and `kohyagen dataset prepare`."""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kohyagen.cli.output import emit_json, print_findings, stdout_console
from kohyagen.findings import Finding, Severity

if TYPE_CHECKING:
    from kohyagen.dataset.check import DatasetReport

# The model presets (kohyagen.config.presets; tests/test_families.py keeps them in step).
MODEL_CHOICES = (
    "sd15", "sd2", "sdxl", "flux", "chroma", "sd3", "lumina2", "hunyuan-image", "anima",
)  # fmt: skip


@contextmanager
def _progress(enabled: bool, label: str) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal. No refresh thread: the check may
    fork worker processes, which must not happen while another thread holds a lock."""
    # a bar in a log file or a pipe is a screenful of \r noise
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from kohyagen.cli.output import stderr_console

    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        console=stderr_console(),
        auto_refresh=False,
        transient=True,
    )
    # total unknown until the scan has listed the images: the bar starts indeterminate
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)
        # auto_refresh is off (no thread), so each update draws the bar itself
        bar.refresh()

    with bar:
        yield update


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
                )
            )
    return rows, hidden


@click.group("dataset")
def dataset_group() -> None:
    """Check a dataset, and prepare a clean kohya layout."""


@dataset_group.command("check")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--model", type=click.Choice(MODEL_CHOICES), default="sd15", show_default=True)
@click.option("--trigger", help="Trigger word every caption should hold.")
@click.option(
    "--caption-ext",
    help="Caption extension kohya will use (its default is .caption; the tagger writes .txt).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--reg", "reg", type=click.Path(path_type=Path), help="Regularisation train dir (N_class/)."
)
@click.option(
    "--deep", is_flag=True, help="Decode every pixel (both cores) and find near-duplicates."
)
@click.option("--resolution", type=click.IntRange(min=64), help="Override the model's resolution.")
@click.option("--min-bucket-reso", type=click.IntRange(min=64), help="Default: resolution / 2.")
@click.option("--max-bucket-reso", type=click.IntRange(min=64), help="Default: 2 × resolution.")
@click.option(
    "--bucket-no-upscale/--bucket-upscale",
    default=None,
    help="kohya's bucket_no_upscale (default: as kohyagen config renders it: on, off when "
    "an image is too small for it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def check_cmd(
    ctx: click.Context,
    directory: Path,
    model: str,
    trigger: str | None,
    caption_ext: str | None,
    batch_size: int,
    reg: Path | None,
    deep: bool,
    resolution: int | None,
    min_bucket_reso: int | None,
    max_bucket_reso: int | None,
    bucket_no_upscale: bool | None,
    as_json: bool,
) -> None:
    """Check DIR for what kohya would trip over, before training.

    DIR is the parent of N_name/ folders, or one folder of images.

    Exits 1 when anything would make kohya fail or train on nothing.
    """
    from kohyagen.dataset.check import check_dataset

    # no bar with --json: a script reading stdout gets the JSON and nothing drawn around it
    with _progress(not as_json, "checking images") as progress:
        report = check_dataset(
            directory,
            model=model,
            trigger=trigger,
            caption_ext=caption_ext,
            batch_size=batch_size,
            reg=reg,
            deep=deep,
            progress=progress,
            resolution=resolution,
            min_bucket_reso=min_bucket_reso,
            max_bucket_reso=max_bucket_reso,
            bucket_no_upscale=bucket_no_upscale,
        )
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_report(report)
    # exit 1 on errors only: warnings are advice, and a script may train on despite them
    if report.errors:
        ctx.exit(1)


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


def _print_report(report: DatasetReport) -> None:
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


@dataset_group.command("prepare")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--concept", required=True, help="Concept name: the folder becomes N_<concept>.")
@click.option("--repeats", default="auto", show_default=True, help="A number, or auto.")
@click.option("--trigger", help="Put this word first in every caption (creating captions).")
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    default=Path("training_data"),
    show_default=True,
    help="The train dir to build N_<concept>/ in.",
)
@click.option("--link", is_flag=True, help="Hard-link unchanged images instead of copying.")
@click.option("--no-fix-orientation", is_flag=True, help="Keep EXIF-rotated images as stored.")
@click.option("--no-convert", is_flag=True, help="Do not convert formats/modes kohya misreads.")
@click.option("--caption-ext", default=".txt", show_default=True)
@click.option("--force", is_flag=True, help="Write into an existing, non-empty target folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def prepare_cmd(
    src: Path,
    concept: str,
    repeats: str,
    trigger: str | None,
    out: Path,
    link: bool,
    no_fix_orientation: bool,
    no_convert: bool,
    caption_ext: str,
    force: bool,
    as_json: bool,
) -> None:
    """Build OUT/N_concept/ from the images (and captions) in SRC. SRC is never changed."""
    from kohyagen.dataset.check import prepare_dataset

    with _progress(not as_json, "preparing") as progress:
        result = prepare_dataset(
            src,
            out,
            concept=concept,
            repeats=repeats,
            trigger=trigger,
            link=link,
            fix_orientation=not no_fix_orientation,
            convert=not no_convert,
            progress=progress,
            force=force,
            caption_ext=caption_ext,
        )
    if as_json:
        emit_json(result.to_dict())
        return
    console = stdout_console()
    copied = f"{result.copied} copied" + (
        f" ({result.linked} hard-linked)" if result.linked else ""
    )
    console.print(f"[green]built[/green] {result.subset_dir} ({result.repeats} repeats)")
    console.print(
        f"images: {copied}, {result.converted} converted ({result.rotated} rotated); "
        f"captions written: {result.captions_written}"
    )
    for file, reason in result.skipped:
        console.print(f"[yellow]skipped[/yellow] {file}: {reason}")
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    # the next command must read the captions just written: kohya's own default is .caption
    ext = f" --caption-ext {caption_ext}" if caption_ext != ".caption" else ""
    trig = f" --trigger {shlex.quote(trigger)}" if trigger else ""
    # quoted and printed without markup, so the line can be pasted into a shell as it is
    console.print(
        f"next: kohyagen dataset check {shlex.quote(str(result.out_dir))}{ext}{trig}",
        markup=False,
    )


COMMANDS: list[click.Command] = [dataset_group]
