"""`kohyagen run` and `kohyagen demo`; this module also lists the estimate and queue
commands of the run concern (kohyagen.cli registers COMMANDS from here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohyagen.cli import estimate_cmd, queue_cmd
from kohyagen.cli import run_options as opt
from kohyagen.cli.dataset_cmd import MODEL_CHOICES
from kohyagen.cli.estimate_cmd import print_estimate
from kohyagen.cli.model_file_options import fetch_option, model_file_option, parse_model_files
from kohyagen.cli.output import emit_json, stdout_console
from kohyagen.cli.run_progress import ProgressPrinter

if TYPE_CHECKING:
    from kohyagen.estimate.plan import Estimate
    from kohyagen.run.result import RunResult

COMMANDS: list[click.Command] = [*estimate_cmd.COMMANDS, *queue_cmd.COMMANDS]


def print_report_path(result: RunResult) -> None:
    if result.report_html:
        console = stdout_console()
        # suggested only when no preview was made: the loss alone cannot judge a style
        if not (result.run_dir / "preview" / "preview.json").is_file():
            console.print(f"compare the checkpoints by eye: kohyagen preview {result.run_dir} "
                          "--checkpoints all", markup=False)  # fmt: skip
        console.print(f"report (open it in a browser): {result.report_html}", markup=False)


def print_usage(result: RunResult, *, report_last: bool = True) -> None:
    """Where the chosen LoRA is and how to use it in A1111 / ComfyUI; then report.html."""
    console = stdout_console()
    if result.lora is None:
        console.print(f"run folder: {result.run_dir}")
        # --prepare-only stops before training: say how to go on from here
        if {s: status for s, status, _ in result.stages}.get("train") == "pending":
            console.print(
                "prepared, not trained: train it with the same `kohyagen run` command "
                f"(without --prepare-only) or with `kohyagen queue {result.run_dir}`",
                markup=False,
            )
        return
    from rich.markup import escape

    stem = result.lora.stem
    weight = result.suggested_weight
    console.print()
    console.print(f"[bold green]LoRA ready:[/bold green] {escape(str(result.lora))}")
    if result.epoch is not None:
        console.print(f"chosen: epoch {result.epoch} — {escape(str(result.reason))}")
    if result.summary_json:
        console.print(
            f"report: {result.summary_json.with_suffix('.md')}  loss plot: {result.loss_png}"
        )
    if result.seconds:
        console.print(
            "stages: " + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in result.seconds)
        )
    console.print("use it:")
    console.print("  AUTOMATIC1111 / Forge: copy it to stable-diffusion-webui/models/Lora/")
    console.print("  ComfyUI: copy it to ComfyUI/models/loras/ and load it with a LoraLoader node")
    # A1111's <lora:NAME:weight> syntax; no markup or emoji, as the [..] and :..: would be eaten
    console.print(
        f"  prompt: {result.trigger}, ... <lora:{stem}:{weight}>   "
        f"(trigger word '{result.trigger}'; start at weight {weight}, try 0.6–1.0)",
        markup=False,
        emoji=False,
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    # the costliest mistake of a first cloud run is an instance left running overnight
    if result.gpu not in (None, "cpu"):
        console.print(
            "[bold]On a rented GPU?[/bold] Copy the LoRA off the machine, then stop the "
            "instance: billing runs until you do."
        )
    # the demo prints its own closing words before the report path
    if report_last:
        print_report_path(result)


def _stdin_is_terminal() -> bool:
    import sys

    return sys.stdin.isatty()


def _confirm_factory(yes: bool, as_json: bool) -> Callable[[Estimate], bool] | None:
    # nobody to answer in a script, a pipe or a queue: not asking beats hanging forever
    if yes or not _stdin_is_terminal():
        return None

    def confirm(est: Estimate) -> bool:
        # the estimate is what the question is about; with --json it is in the result instead
        if not as_json:
            print_estimate(est)
        # asked on stderr, so stdout stays the result alone
        return click.confirm("start training?", default=True, err=True)

    return confirm


@click.command("run")
@opt.images_argument()
@opt.name_option()
@opt.trigger_option()
@click.option("--model", type=click.Choice(MODEL_CHOICES), default="sd15", show_default=True)
@click.option("--base-model", help="Local checkpoint/diffusers folder or a Hugging Face repo id "
              "(a DiT family's DiT file; give its other files with --model-file).")  # fmt: skip
@model_file_option()
@fetch_option()
@click.option("--gpu", default="auto", show_default=True, help="GPU preset name, cpu, or auto.")
@opt.budget_option("Stop before training if the estimate is above this many dollars.")
@opt.backend_option("kohya sd-scripts, kohyagen's builtin trainer, or kohya when found.")
@opt.run_dir_option()
@opt.yes_option("Do not ask before training.")
@opt.epochs_option()
@opt.set_option()
@opt.seed_option("Training seed (recorded in the manifest).")
@click.option("--price-per-hour", type=float, help="What this GPU costs you per hour.")
@opt.prices_option()
@click.option(
    "--sd-scripts",
    type=click.Path(path_type=Path, file_okay=False),
    help="kohya sd-scripts checkout.",
)
@opt.restart_option()
@click.option(
    "--prepare-only",
    is_flag=True,
    help="Stop before training (after the estimate): train later with this command again "
    "or with `kohyagen queue`.",
)
@opt.json_option()
def run_cmd(
    images: Path,
    name: str,
    trigger: str,
    model: str,
    base_model: str | None,
    model_files: tuple[str, ...],
    fetch: bool,
    gpu: str,
    budget: float | None,
    backend: str,
    run_dir: Path | None,
    yes: bool,
    epochs: int | None,
    overrides: tuple[str, ...],
    seed: int | None,
    price_per_hour: float | None,
    prices_file: Path | None,
    sd_scripts: Path | None,
    restart: bool,
    prepare_only: bool,
    as_json: bool,
) -> None:
    """From a folder of images to a chosen LoRA: check → prepare → tag → config →
    estimate → train → report → pick. Run it again to continue an interrupted run."""
    from kohyagen.run.pipeline import RunOptions, run_pipeline

    options = RunOptions(
        images=images,
        name=name,
        trigger=trigger,
        model=model,
        base_model=base_model,
        model_files=tuple(parse_model_files(model_files).items()),
        fetch=fetch,
        gpu=gpu,
        budget=budget,
        backend=backend,
        run_dir=run_dir,
        epochs=epochs,
        overrides=overrides,
        seed=seed,
        price_per_hour=price_per_hour,
        prices_file=prices_file,
        sd_scripts=sd_scripts,
        restart=restart,
    )
    result = run_pipeline(
        options,
        progress=ProgressPrinter(quiet=False),
        # --prepare-only never trains, so there is nothing to confirm
        confirm=None if prepare_only else _confirm_factory(yes, as_json),
        stop_after="estimate" if prepare_only else None,
    )
    if as_json:
        emit_json(result.to_dict())
    else:
        print_usage(result)


COMMANDS.append(run_cmd)


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("kohyagen-demo"),
    show_default=True,
    help="Where the tiny model, the images and the run go.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def demo_cmd(directory: Path, epochs: int, as_json: bool) -> None:
    """Run the whole pipeline on a tiny random model and a generated dataset, offline on
    the CPU (about a minute): see every stage work before renting a GPU."""
    from kohyagen.run.demo import run_demo

    # Progress goes to stderr, so it is shown with --json too (stdout stays pure JSON).
    click.echo(
        f"kohyagen demo in {directory.resolve()} (tiny random model, CPU, offline)", err=True
    )
    result = run_demo(directory, progress=ProgressPrinter(), epochs=epochs)
    if as_json:
        emit_json(result.to_dict())
        return
    print_usage(result, report_last=False)
    # a random model's LoRA draws noise: say so before anyone judges kohyagen by its samples
    click.echo(
        "\nThis LoRA comes from a tiny random model, so it is only a demonstration. For a "
        "real one: kohyagen run YOUR_IMAGES --name NAME --trigger WORD --model sd15 --gpu auto"
    )
    print_report_path(result)


COMMANDS.append(demo_cmd)
