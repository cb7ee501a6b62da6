"""`kohyagen queue`: several LoRAs in one session, and its hidden per-item worker."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohyagen.cli.output import emit_json, stdout_console
from kohyagen.cli.run_progress import ProgressPrinter, minutes

if TYPE_CHECKING:
    from kohyagen.run.queue import QueueResult

COMMANDS: list[click.Command] = []


@click.command("queue")
@click.argument("items", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--gpus",
    help="Comma-separated GPU indices, one worker each (default: every free GPU; one "
    "worker when there is at most one).",
)
@click.option("--sequential", is_flag=True, help="One item at a time, whatever the GPUs.")
@click.option("--backend", type=click.Choice(["auto", "kohya", "builtin"]), help="Trainer backend.")
@click.option(
    "--sd-scripts",
    type=click.Path(path_type=Path, file_okay=False),
    help="kohya sd-scripts checkout.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def queue_cmd(
    ctx: click.Context,
    items: tuple[Path, ...],
    gpus: str | None,
    sequential: bool,
    backend: str | None,
    sd_scripts: Path | None,
    as_json: bool,
) -> None:
    """Train several LoRAs in one session (run folders or training configs), one after
    another or one per free GPU. A failed item does not stop the others; exit 1 if any failed."""
    from kohyagen.run.queue import run_queue

    # each line carries its item's label: with one worker per GPU the items' lines interleave
    def progress(label: str, line: str) -> None:
        if not as_json:
            click.echo(f"[{label}] {line}", err=True)

    result = run_queue(
        list(items),
        gpus=[g.strip() for g in gpus.split(",") if g.strip()] if gpus else None,
        sequential=sequential,
        backend=backend,
        sd_scripts=sd_scripts,
        progress=progress,
    )
    if as_json:
        emit_json(result.to_dict())
    else:
        _print_queue(result)
    # every item ran; exit 1 tells a script that at least one needs a look
    if result.failed:
        ctx.exit(1)


def _print_queue(result: QueueResult) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="queue")
    table.add_column("item", overflow="fold")
    table.add_column("GPU")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("result", overflow="fold")
    for r in result.results:
        style = "green" if r.status == "ok" else "red"
        # item paths and failure messages are the user's text: escaped, [..] is not markup
        table.add_row(
            escape(r.item),
            r.gpu if r.gpu is not None else "-",
            f"[{style}]{r.status}[/{style}]",
            minutes((r.seconds / 60, r.seconds / 60)),
            escape(r.message),
        )
    console = stdout_console()
    console.print(table)
    console.print(f"{len(result.results) - len(result.failed)} ok, {len(result.failed)} failed")


@click.command("queue-item", hidden=True)
@click.argument("item", type=click.Path(path_type=Path))
@click.option("--result", "result_file", type=click.Path(path_type=Path), required=True)
@click.option("--backend", type=click.Choice(["auto", "kohya", "builtin"]))
@click.option("--sd-scripts", type=click.Path(path_type=Path, file_okay=False))
def queue_item_cmd(
    item: Path, result_file: Path, backend: str | None, sd_scripts: Path | None
) -> None:
    """One queue item, in its own process (used by `kohyagen queue`)."""
    # a process per item: CUDA_VISIBLE_DEVICES pins it to one GPU, and a crash or an
    # out-of-memory in one item cannot take the queue down with it
    import json
    import os

    from kohyagen.run.queue_item import run_item

    data = run_item(item, backend=backend, sd_scripts=sd_scripts, progress=ProgressPrinter())
    # recorded so the queue can show (and a test can check) which GPU the item really saw
    data["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    # the result goes through a file, not stdout, which carries the item's progress lines
    result_file.write_text(json.dumps(data))
    pinned = data["cuda_visible_devices"]
    where = f" (CUDA_VISIBLE_DEVICES={pinned})" if pinned is not None else ""
    click.echo(f"done: {data.get('lora') or data.get('run_dir')}{where}")


COMMANDS += [queue_cmd, queue_item_cmd]
