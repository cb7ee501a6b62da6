"""`kohyagen preview`: draw the run's prompts with its checkpoints at several LoRA weights."""

from __future__ import annotations

import math
from pathlib import Path

import click

from kohyagen.cli.output import emit_json, stderr_console, stdout_console


def _weights(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        weights = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give numbers separated by commas, e.g. 0.5,1.0") from None
    if not weights:
        raise click.BadParameter("give at least one weight, e.g. 0.8")
    if not all(math.isfinite(w) for w in weights):
        # float() takes nan and inf: a NaN weight draws noise, and names no grid column
        raise click.BadParameter(f"{value!r}: every weight must be a finite number, e.g. 0.8")
    return weights


@click.command("preview")
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--checkpoints", default="best", show_default=True,
              help="Which checkpoints: best, all, or epochs such as 2,4,6.")  # fmt: skip
@click.option("--weights", default="0.5,0.7,0.8,1.0", show_default=True, callback=_weights,
              help="LoRA weights, comma-separated (a column without the LoRA is added).")  # fmt: skip
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Seeds per prompt: five or more tell a pattern from chance.")  # fmt: skip
@click.option("--prompts", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Prompt file in kohya's format. Default: the run's sample_prompts.")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), help="Sampling steps (default: each prompt's).")
@click.option("--trigger", help="Trigger word for the variations. Default: the run's.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def preview_command(
    run_dir: Path,
    checkpoints: str,
    weights: tuple[float, ...],
    seeds: int,
    prompts: Path | None,
    steps: int | None,
    trigger: str | None,
    as_json: bool,
) -> None:
    """Draw one image per checkpoint x weight x seed x prompt of RUN_DIR with the base model,
    plus the trigger at the start, middle and end and in the negative prompt; write labelled
    grids to RUN_DIR/preview/ and refresh report.html. Images already drawn are reused."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from kohyagen.report.preview import PreviewOptions, render_preview
    from kohyagen.report.summary import write_report

    options = PreviewOptions(checkpoints, weights, seeds, prompts, steps, trigger)
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr_console(), transient=True) as bar:
        task = bar.add_task("preview", total=None)

        def on_image(done: int, total: int, _job: object) -> None:
            bar.update(task, completed=done, total=total)

        result = render_preview(run_dir, options, progress=on_image)
    summary = write_report(run_dir)
    if as_json:
        emit_json({**result.to_dict(), "report_html": summary.get("html")})
        return
    console = stdout_console()
    console.print(f"{result.total} images ({result.drawn} drawn, {result.total - result.drawn} "
                  f"reused) in {result.folder}", markup=False)  # fmt: skip
    for grid in result.grids:
        console.print(f"  grid: {grid}", markup=False)
    if summary.get("html"):
        console.print(f"report: {summary['html']}", markup=False)


COMMANDS: list[click.Command] = [preview_command]
