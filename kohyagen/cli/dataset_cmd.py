"""`kohyagen dataset check` and `kohyagen dataset prepare`.

The check's report on a terminal is drawn by dataset_report.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from kohyagen.cli.dataset_report import print_report
from kohyagen.cli.output import emit_json, stdout_console

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
        print_report(report)
    # exit 1 on errors only: warnings are advice, and a script may train on despite them
    if report.errors:
        ctx.exit(1)


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
