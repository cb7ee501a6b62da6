"""`kohyagen tag`: caption a folder of images with a WD14 tagger."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kohyagen.cli.output import emit_json, stderr_console, stdout_console
from kohyagen.tagging.models import DEFAULT_MODEL, KNOWN_MODELS

if TYPE_CHECKING:
    from kohyagen.tagging.directory import TagResult
    pass

TOP_TAGS_SHOWN = 25


def _split(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(t.strip() for t in value.split(",") if t.strip())


@click.command("tag")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    help="A tagger name (" + ", ".join(KNOWN_MODELS) + "), a hub repo id holding "
    "model.onnx and selected_tags.csv, or a local folder with those files.",
)
@click.option("--threshold", default=0.35, show_default=True, help="General tag threshold.")
@click.option(
    "--character-threshold", default=0.85, show_default=True, help="Character tag threshold."
)
@click.option("--trigger", default=None, help="Trigger word put first in every caption.")
@click.option("--undesired-tags", default=None, help="Comma-separated tags never written.")
@click.option(
    "--always-first", default=None, help="Comma-separated tags moved to the front when found."
)
@click.option("--keep-underscores", is_flag=True, help="Keep Danbooru underscores (long_hair).")
@click.option("--rating", is_flag=True, help="Add the most likely rating tag.")
@click.option("--caption-ext", default=".txt", show_default=True, help="Caption file extension.")
@click.option(
    "--mode",
    type=click.Choice(["skip", "append", "overwrite"]),
    default="skip",
    show_default=True,
    help="What to do with an existing caption: keep it, add missing tags, or replace it.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per batch.")
@click.option("--recursive", is_flag=True, help="Also tag images in subfolders.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def tag_command(
    directory: Path,
    model: str,
    threshold: float,
    character_threshold: float,
    trigger: str | None,
    undesired_tags: str | None,
    always_first: str | None,
    keep_underscores: bool,
    rating: bool,
    caption_ext: str,
    mode: str,
    batch_size: int | None,
    recursive: bool,
    as_json: bool,
) -> None:
    """Caption the images in DIRECTORY with a WD14 tagger (onnxruntime).

    Existing captions are kept unless --mode says otherwise, so an interrupted run
    continues where it stopped.
    """
    from kohyagen.tagging.directory import tag_directory

    err = stderr_console()
    bar, progress = _progress_bar(err, disable=as_json)

    def message(text: str) -> None:
        style = "yellow" if text.startswith("warning:") else "cyan"
        err.print(f"[{style}]{text}[/{style}]")

    try:
        result = tag_directory(
            directory,
            model=model,
            threshold=threshold,
            character_threshold=character_threshold,
            trigger=trigger,
            undesired_tags=_split(undesired_tags),
            always_first=_split(always_first),
            keep_underscores=keep_underscores,
            rating=rating,
            caption_ext=caption_ext,
            mode=mode,
            batch_size=batch_size,
            recursive=recursive,
            progress=progress,
            on_message=None if as_json else message,
        )
    finally:
        if bar.live.is_started:  # stopping a bar never shown prints a blank line
            bar.stop()
    if as_json:
        emit_json(result.to_dict())
    else:
        _print_summary(result)
    _fail_when_nothing_worked(result, directory)


def _fail_when_nothing_worked(result: TagResult, directory: Path) -> None:
    """Exit 1 when every image failed: a scripted run must not take that for success."""
    if result.failed and not result.tagged and not result.skipped:
        from kohyagen.errors import TaggingError

        raise TaggingError(
            f"every image failed ({result.failed})",
            path=directory,
            hint="the reasons are listed above; fix those files and run again",
        )


def _progress_bar(err: Any, *, disable: bool) -> tuple[Any, Callable[[int, int], None]]:
    """A tagging progress bar on stderr, and the callback that drives it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=disable,
    )
    task = bar.add_task("tagging", total=None)

    def progress(done: int, total: int) -> None:
        # Started on the first call, after any model download has printed its own bars.
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    return bar, progress


def _print_summary(result: TagResult) -> None:
    from rich.table import Table

    out = stdout_console()
    for failure in result.failures:
        out.print(f"[red]failed[/red] {failure.path}: {failure.reason}")
    if result.provider is None:
        for warning in result.warnings:
            out.print(f"[yellow]warning:[/yellow] {warning}")
    if result.tag_counts:
        table = Table(title="most frequent tags", show_header=True)
        table.add_column("tag", overflow="fold")
        table.add_column("images", justify="right")
        for tag, count in list(result.tag_counts.items())[:TOP_TAGS_SHOWN]:
            table.add_row(tag, str(count))
        out.print(table)
    speed = ""
    if result.provider is not None:
        speed = (
            f" with {result.model} on {result.provider} ({result.images_per_second:.1f} images/s)"
        )
    out.print(
        f"tagged {result.tagged}, skipped {result.skipped} (caption kept), "
        f"failed {result.failed}{speed}"
    )


COMMANDS: list[click.Command] = [tag_command]
