"""`kohyagen train`, `kohyagen report`, `kohyagen pick`."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kohyagen.cli.output import emit_json, print_findings, stderr_console, stdout_console
from kohyagen.errors import EXIT_INTERRUPTED, LintFailed

if TYPE_CHECKING:
    from rich.console import Console

    from kohyagen.launch.outcome import TrainResult
    from kohyagen.launch.watch import Progress


def _money(value: float | None) -> str:
    if value is None:
        return ""
    # a CPU or demo run costs fractions of a cent: $0.00 would read as "free", not "tiny"
    return f"${value:.2f}" if value >= 0.01 else f"${value:.4f}"


def _esc(value: object) -> str:
    """Text from files and logs, shown literally (rich would read [..] as markup)."""
    from rich.markup import escape

    return escape(str(value))


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    # m:ss as tqdm shows it, h:mm:ss once a run passes the hour
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def progress_line(p: Progress) -> str:
    """One line: attempt, epoch, step, loss, speed, ETA, cost so far."""
    parts = []
    # the attempt number matters only once the out-of-memory ladder has retried
    if p.attempt > 1:
        parts.append(f"attempt {p.attempt}")
    if p.total_epochs:
        parts.append(f"epoch {p.epoch}/{p.total_epochs}")
    if p.total_steps:
        parts.append(f"step {p.step}/{p.total_steps} ({100 * p.step // max(p.total_steps, 1)}%)")
    else:
        # no step total until kohya prints its summary, after the models and latents load
        parts.append("loading")
    if p.loss is not None:
        parts.append(f"loss {p.loss:.4g}")
    if p.seconds_per_step:
        rate = p.seconds_per_step
        # tqdm's convention: s/step when slow, step/s when fast, so the number stays readable
        parts.append(f"{rate:.3g} s/step" if rate >= 1 else f"{1 / rate:.3g} step/s")
    if p.eta_s is not None and p.total_steps:
        parts.append(f"ETA {_clock(p.eta_s)}")
    parts.append(f"elapsed {_clock(p.elapsed_s)}")
    if p.cost is not None:
        parts.append(_money(p.cost))
    return " · ".join(parts)


@click.command("train")
@click.argument("config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--dataset-config", type=click.Path(path_type=Path, dir_okay=False),
              help="Dataset config (default: the training config's dataset_config).")  # fmt: skip
@click.option("--sd-scripts", type=click.Path(path_type=Path),
              help="kohya sd-scripts checkout (default: KOHYA_SD_SCRIPTS, vendor/sd-scripts, ~/sd-scripts).")  # fmt: skip
@click.option("--python", "python_", type=click.Path(path_type=Path),
              help="Interpreter to run the trainer (default: the checkout's venv, else this one).")  # fmt: skip
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--run-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Run folder (default: runs/<output_name>, numbered when taken).")  # fmt: skip
@click.option("--backend", type=click.Choice(["auto", "kohya", "builtin"]), default="auto",
              show_default=True, help="auto: kohya when a checkout is found, else builtin.")  # fmt: skip
@click.option("--price", type=click.FloatRange(min=0), help="GPU price per hour, for the cost.")
@click.option("--no-retry", is_flag=True, help="Do not retry with a smaller configuration on OOM.")
@click.option("--overwrite", is_flag=True,
              help="Let kohya overwrite checkpoints an earlier run left in output_dir.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Print the command and stop.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def train_command(
    ctx: click.Context,
    config: Path,
    dataset_config: Path | None,
    sd_scripts: Path | None,
    python_: Path | None,
    gpus: int,
    run_dir: Path | None,
    backend: str,
    price: float | None,
    no_retry: bool,
    overwrite: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Train a LoRA from CONFIG with kohya sd-scripts: lint, launch, watch, recover, report."""
    # imported here so that `kohyagen --help` does not load the launch machinery
    from kohyagen.launch.train import train

    console = stdout_console()
    err = stderr_console()
    # the live line goes to stderr, so stdout stays clean for --json and for pipes
    live, on_progress = _live_display(err, enabled=not as_json and not dry_run)

    try:
        if live is not None:
            live.start()
        try:
            result = train(
                config, dataset_config=dataset_config, sd_scripts=sd_scripts, python=python_,
                gpus=gpus, run_dir=run_dir, retry=not no_retry, backend=backend,
                price_per_hour=price, on_progress=on_progress, dry_run=dry_run, overwrite=overwrite,
            )  # fmt: skip
        finally:
            # stopped before any error is printed, or the message is drawn over by the line
            if live is not None:
                live.stop()
    except LintFailed as exc:
        _print_lint_failed(exc, as_json=as_json)
        # re-raised so that main() maps it to exit code 1 in one place
        raise
    if dry_run:
        if as_json:
            emit_json({"run_dir": str(result.run_dir), "command": result.command,
                       "checked_against": result.checked_against})  # fmt: skip
        else:
            click.echo(shlex.join(result.command))
            # stderr: stdout holds only the command, to be copied or piped as it is
            click.echo(f"lint: checked against {result.checked_against}", err=True)
        return
    if as_json:
        emit_json(_result_json(result))
    else:
        _print_outcome(console, result)
    # Ctrl-C is not a failure of the training: its own exit code, as shells expect (130)
    if result.status == "interrupted":
        ctx.exit(EXIT_INTERRUPTED)
    result.raise_for_status()


def _print_lint_failed(exc: LintFailed, *, as_json: bool) -> None:
    """The findings that stopped the run, and which kohya version's options judged them."""
    if as_json:
        emit_json({"status": "lint-failed", "checked_against": exc.checked_against,
                   "findings": [f.to_dict() for f in exc.findings]})  # fmt: skip
        return
    print_findings(exc.findings, title="lint")
    if exc.checked_against:
        # as `kohyagen lint` says it: an option one sd-scripts version lacks, another has
        click.echo(f"checked against {exc.checked_against}")


def _live_display(err: Any, *, enabled: bool) -> tuple[Any, Callable[[Any], None]]:
    """The live progress line on stderr (None when disabled), and its on_progress callback."""
    live = None
    if enabled:
        from rich.live import Live
        from rich.text import Text

        # transient: the line disappears at the end, leaving only the outcome in the scrollback
        live = Live(Text("starting"), console=err, refresh_per_second=4, transient=True)

    def on_progress(p: Any) -> None:
        if live is None:
            return
        from rich.text import Text

        # messages (an OOM retry, a stage) scroll above the live line instead of replacing it
        if p.message:
            live.console.print(f"[dim]{_clock(p.elapsed_s)}[/dim] {_esc(p.message)}")
        live.update(Text(progress_line(p)))

    return live, on_progress


def _result_json(result: Any) -> dict[str, Any]:
    """The training result as --json prints it."""
    return {
        "run_dir": str(result.run_dir),
        "status": result.status,
        "failure": result.failure.to_dict() if result.failure else None,
        "attempts": [a.to_dict() for a in result.attempts],
        "command": result.command,
        "cost": result.cost,
        "summary": result.summary,
        "report_error": result.report_error,
        "checked_against": result.checked_against,
    }


def _print_outcome(console: Console, result: TrainResult) -> None:
    style = {"succeeded": "green", "interrupted": "yellow"}.get(result.status, "red")
    console.print(f"[{style}]training {result.status}[/{style}] in {_esc(result.run_dir)}")
    for attempt in result.attempts[:-1]:
        cause = attempt.diagnosis.cause if attempt.diagnosis else "failed"
        console.print(f"  attempt {attempt.number}: {_esc(cause)}")
    if result.failure:
        console.print(f"  cause: {_esc(result.failure.cause)}")
        console.print(f"  fix:   {_esc(result.failure.fix)}")
        # the log line kohya printed, shown raw: it may hold [brackets] rich would eat
        if result.failure.evidence:
            console.print(f"  seen:  {result.failure.evidence}", markup=False)
    # errors stopped the run before it started; warnings let it run and are only counted
    warnings = [f for f in result.lint if f.severity.value == "warning"]
    if warnings:
        codes = ", ".join(sorted({f.code for f in warnings}))
        console.print(f"  lint: {len(warnings)} warning(s) ({_esc(codes)}); see `kohyagen lint`")
    if result.checked_against:
        console.print(f"  lint: checked against {_esc(result.checked_against)}")
    summary = result.summary or {}
    if summary.get("recommended"):
        rec = summary["recommended"]
        console.print(f"  best checkpoint: [bold]{_esc(rec['file'])}[/bold]: {_esc(rec['reason'])}")
    if result.cost is not None:
        console.print(f"  cost: {_money(result.cost)}")
    if result.report_error:
        console.print(
            f"  [yellow]the report could not be written[/yellow]: {_esc(result.report_error)}"
        )
    else:
        console.print(f"  report: {_esc(result.run_dir / 'summary.md')}")


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def report_command(run_dir: Path, as_json: bool) -> None:
    """Write summary.json, summary.md, loss.png and report.html for RUN_DIR (also while it
    runs)."""
    from kohyagen.report.summary import write_report

    summary = write_report(run_dir)
    if as_json:
        emit_json(summary)
        return
    console = stdout_console()
    ended = summary["ended_by"]
    # "ended by" names the failure code only when it says more than the status does
    why = f" (ended by {ended})" if ended and ended != summary["status"] else ""
    console.print(f"[bold]{_esc(summary['output_name'])}[/bold]: {summary['status']}{why}")
    steps, epochs = summary["steps"], summary["epochs"]
    console.print(f"  steps {steps['done']}/{steps['total'] or '?'}, "
                  f"epochs {epochs['done']}/{epochs['total'] or '?'}")  # fmt: skip
    for row in summary["loss_per_epoch"]:
        val = next(
            (v["loss"] for v in summary["validation_loss_per_epoch"] if v["epoch"] == row["epoch"]),
            None,
        )
        extra = f", validation {val:.4g}" if isinstance(val, float) else ""
        # kohya does not stop on a NaN loss (it keeps training), so an epoch can have none
        loss = f"{row['loss']:.4g}" if isinstance(row["loss"], float) else "nan"
        console.print(f"  epoch {row['epoch']}: loss {loss}{extra}")
    if summary["recommended"]:
        rec = summary["recommended"]
        console.print(f"  best checkpoint: [bold]{_esc(rec['file'])}[/bold]: {_esc(rec['reason'])}")
    if summary.get("cost") is not None:
        console.print(f"  cost: {_money(summary['cost'])}")
    console.print(f"  wrote summary.json, summary.md{', loss.png' if summary.get('plot') else ''}, "
                  f"report.html in {_esc(run_dir)}")  # fmt: skip
    console.print(f"  report: {_esc(summary['html'])}")


@click.command("pick")
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--by", type=click.Choice(["auto", "val", "train"]), default="auto", show_default=True,
              help="Rank by validation loss, by the training-loss curve, or auto.")  # fmt: skip
@click.option("--prune", is_flag=True, help="Delete the other checkpoints of this run.")
@click.option("--json", "as_json", is_flag=True, help="Print the choice as JSON.")
def pick_command(run_dir: Path, by: str, prune: bool, as_json: bool) -> None:
    """Choose the checkpoint to use and link it as <output_name>-best."""
    from kohyagen.report.pick import pick

    choice = pick(run_dir, by=by, prune=prune)
    if as_json:
        emit_json(choice.to_dict())
        return
    console = stdout_console()
    console.print(f"best: [bold]{_esc(choice.path.name)}[/bold]")
    console.print(f"  why: {choice.reason}", markup=False)
    for flag in choice.flags:
        console.print(f"  [yellow]warning[/yellow]: {flag.replace('-', ' ')}")
    console.print(f"  wrote {_esc(choice.best_path)}")
    if choice.pruned:
        console.print(f"  deleted {len(choice.pruned)} other checkpoint(s)")


COMMANDS: list[click.Command] = [train_command, report_command, pick_command]
