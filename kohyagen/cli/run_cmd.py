"""`kohyagen estimate`, `run`, `queue` and `demo`: thin commands over the run concern."""

from __future__ import annotations

from pathlib import Path

import click

from kohyagen.cli.output import emit_json, stdout_console

COMMANDS: list[click.Command] = []


def _minutes(span: tuple[float, float] | None) -> str:
    if span is None:
        return "unknown"

    def one(m: float) -> str:
        if m < 1:
            return f"{m * 60:.0f} s"
        return f"{m:.0f} min" if m < 90 else f"{m / 60:.1f} h"

    low, high = span
    return one(low) if round(low) == round(high) else f"{one(low)} – {one(high)}"


def _dollars(span: tuple[float, float]) -> str:
    low, high = span
    return f"${low:.2f}" if abs(high - low) < 0.005 else f"${low:.2f} – ${high:.2f}"


def resolve_gpu(gpu: str) -> tuple[str, str | None]:
    """--gpu value -> (preset name or "cpu", a note on what was detected)."""
    if gpu.lower() != "auto":
        return gpu, None
    from kohyagen.hardware import detect_preset

    preset, hardware = detect_preset()
    if preset == "cpu":
        return preset, hardware.note
    return preset, f"{hardware.note}: {hardware.gpus[0].name} → preset {preset}"


def print_estimate(est, *, gpu_note: str | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = stdout_console()
    if gpu_note:
        console.print(f"[dim]GPU: {escape(gpu_note)}[/dim]")
    console.print(
        f"[bold]{est.model}[/bold] on [bold]{est.gpu_label}[/bold]: {est.images} images, "
        f"{est.images_x_repeats} images x repeats per epoch, {est.epochs} epochs, "
        f"batch {est.batch_size}, {est.resolution} px"
    )
    console.print(f"steps: [bold]{est.steps}[/bold] ({est.steps_per_epoch} per epoch)")
    console.print(
        f"time:  [bold]{_minutes(est.total_minutes)}[/bold] "
        f"(training {_minutes(est.train_minutes)}, loading and caching "
        f"{_minutes(est.overhead_minutes)})"
    )
    if est.vram_gb is not None:
        style = {"yes": "green", "tight": "yellow", "no": "red"}[est.fits]
        console.print(
            f"VRAM:  about {est.memory_gb:g} GB of {est.vram_gb:g} GB → "
            f"[{style}]{'fits' if est.fits == 'yes' else est.fits if est.fits == 'tight' else 'does not fit'}[/{style}]"
        )
    console.print(f"certainty: {est.certainty}")
    if est.costs:
        table = Table(title="cost by provider (setup + loading + training)")
        table.add_column("provider")
        table.add_column("$/hour", justify="right")
        table.add_column("setup", justify="right")
        table.add_column("cost", justify="right")
        table.add_column("price from")
        for c in est.costs:
            table.add_row(
                c.label,
                _dollars(c.price_per_hour),
                _minutes(c.setup_minutes),
                _dollars(c.cost),
                c.basis,
            )
        console.print(table)
    if est.own_cost is not None:
        console.print(f"at your ${est.own_price_per_hour:.2f}/hour: {_dollars(est.own_cost)}")
    for note in est.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    console.print("[dim]sources: kohyagen/templates/throughput.toml, providers.toml[/dim]")


def _default_batch_size(model: str, gpu: str) -> int:
    """The batch size kohyagen's presets would use for this model and GPU, else 2."""
    try:
        from kohyagen import presets
    except ImportError:
        return 2
    try:
        settings = presets.training_settings(presets.get_model(model), presets.get_gpu(gpu))
    except Exception:
        return 2
    for key in ("train_batch_size", "batch_size"):
        if key in settings:
            value = getattr(settings[key], "value", settings[key])
            if isinstance(value, int):
                return value
    return 2


@click.command("estimate")
@click.argument("dataset", required=False, type=click.Path(path_type=Path))
@click.option("--images", type=click.IntRange(min=1), help="Number of images (without DATASET).")
@click.option(
    "--model",
    type=click.Choice(["sd15", "sd2", "sdxl"]),
    default="sd15",
    show_default=True,
    help="Base model family.",
)
@click.option(
    "--gpu",
    default="auto",
    show_default=True,
    help="GPU preset name (rtx4090, a100, 24gb, ...) or auto.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Repeats per image (ignored for an N_name/ train dir, whose folders say it).",
)
@click.option("--batch-size", type=click.IntRange(min=1), help="Default: the GPU preset's.")
@click.option("--resolution", type=click.IntRange(min=64), help="Default: the model's native.")
@click.option("--gradient-checkpointing", is_flag=True, help="Assume gradient checkpointing.")
@click.option(
    "--prices",
    "prices_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Your prices TOML (default ~/.config/kohyagen/prices.toml when it exists).",
)
@click.option("--price-per-hour", type=float, help="What you pay per hour for this GPU.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def estimate_cmd(
    dataset: Path | None,
    images: int | None,
    model: str,
    gpu: str,
    epochs: int,
    repeats: int,
    batch_size: int | None,
    resolution: int | None,
    gradient_checkpointing: bool,
    prices_file: Path | None,
    price_per_hour: float | None,
    as_json: bool,
) -> None:
    """Steps, wall time, VRAM fit and cost by provider of a LoRA run, before renting."""
    from kohyagen.errors import UsageError
    from kohyagen.estimate import count_dataset, estimate, load_prices

    if (dataset is None) == (images is None):
        raise UsageError("give either a DATASET folder or --images N")
    gpu_name, gpu_note = resolve_gpu(gpu)
    batch = batch_size or _default_batch_size(model, gpu_name)
    if dataset is not None:
        counts = count_dataset(dataset, model=model, batch_size=batch, repeats=repeats)
        n_images, seen, per_epoch = counts.images, counts.images_x_repeats, counts.steps_per_epoch
    else:
        n_images, seen, per_epoch = images, images * repeats, None
    est = estimate(
        model=model,
        gpu=gpu_name,
        images=n_images,
        images_x_repeats=seen,
        epochs=epochs,
        batch_size=batch,
        resolution=resolution,
        steps_per_epoch=per_epoch,
        gradient_checkpointing=gradient_checkpointing,
        prices=load_prices(prices_file),
        own_price_per_hour=price_per_hour,
    )
    if as_json:
        data = est.to_dict()
        data["gpu_detection"] = gpu_note
        emit_json(data)
    else:
        print_estimate(est, gpu_note=gpu_note)


COMMANDS.append(estimate_cmd)


class _ProgressPrinter:
    """Stage lines on stderr; the trainer's many progress events at most every few seconds."""

    def __init__(self, *, quiet: bool = False, every_s: float = 5.0) -> None:
        self.quiet = quiet
        self.every_s = every_s
        self._last = 0.0

    def __call__(self, stage: str, message: str) -> None:
        import time

        if self.quiet:
            return
        if stage == "train" and message not in ("started",) and not message.startswith("done"):
            now = time.monotonic()
            if now - self._last < self.every_s:
                return
            self._last = now
        click.echo(f"[{stage}] {message}", err=True)


def print_usage(result) -> None:
    """Where the chosen LoRA is and how to use it in A1111 / ComfyUI."""
    console = stdout_console()
    if result.lora is None:
        console.print(f"run folder: {result.run_dir}")
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
    console.print("use it:")
    console.print("  AUTOMATIC1111 / Forge: copy it to stable-diffusion-webui/models/Lora/")
    console.print("  ComfyUI: copy it to ComfyUI/models/loras/ and load it with a LoraLoader node")
    console.print(
        f"  prompt: {result.trigger}, ... <lora:{stem}:{weight}>   "
        f"(trigger word '{result.trigger}'; start at weight {weight}, try 0.6–1.0)",
        markup=False,
        emoji=False,
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")


def _confirm_factory(yes: bool, as_json: bool):
    import sys

    if yes or not sys.stdin.isatty():
        return None

    def confirm(est) -> bool:
        if not as_json:
            print_estimate(est)
        return click.confirm("start training?", default=True, err=True)

    return confirm


@click.command("run")
@click.argument("images", type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", required=True, help="LoRA name (file name and run folder).")
@click.option("--trigger", required=True, help="Trigger word put in every caption.")
@click.option(
    "--model", type=click.Choice(["sd15", "sd2", "sdxl"]), default="sd15", show_default=True
)
@click.option("--base-model", help="Local checkpoint/diffusers folder or a Hugging Face repo id.")
@click.option("--gpu", default="auto", show_default=True, help="GPU preset name, cpu, or auto.")
@click.option(
    "--budget", type=float, help="Stop before training if the estimate is above this many dollars."
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "kohya", "builtin"]),
    default="auto",
    show_default=True,
    help="kohya sd-scripts, kohyagen's builtin trainer, or kohya when found.",
)
@click.option(
    "--run-dir", type=click.Path(path_type=Path, file_okay=False), help="Default: runs/NAME."
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask before training.")
@click.option(
    "--epochs", type=click.IntRange(min=1), help="Training epochs (default: the preset's)."
)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config option."
)
@click.option("--seed", type=int, help="Training seed (recorded in the manifest).")
@click.option("--price-per-hour", type=float, help="What this GPU costs you per hour.")
@click.option(
    "--prices",
    "prices_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Your prices TOML.",
)
@click.option(
    "--sd-scripts",
    type=click.Path(path_type=Path, file_okay=False),
    help="kohya sd-scripts checkout.",
)
@click.option(
    "--restart", is_flag=True, help="Start the run folder over (old files kept under previous/)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def run_cmd(
    images: Path,
    name: str,
    trigger: str,
    model: str,
    base_model: str | None,
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
    as_json: bool,
) -> None:
    """From a folder of images to a chosen LoRA: check → prepare → tag → config →
    estimate → train → report → pick. Run it again to continue an interrupted run."""
    from kohyagen.pipeline import RunOptions, run_pipeline

    options = RunOptions(
        images=images,
        name=name,
        trigger=trigger,
        model=model,
        base_model=base_model,
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
        progress=_ProgressPrinter(quiet=False),
        confirm=_confirm_factory(yes, as_json),
    )
    if as_json:
        emit_json(result.to_dict())
    else:
        print_usage(result)


COMMANDS.append(run_cmd)


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
    from kohyagen.queue import run_queue

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
    if result.failed:
        ctx.exit(1)


def _print_queue(result) -> None:
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
        table.add_row(
            escape(r.item),
            r.gpu if r.gpu is not None else "-",
            f"[{style}]{r.status}[/{style}]",
            _minutes((r.seconds / 60, r.seconds / 60)),
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
    import json
    import os

    from kohyagen.queue import run_item

    data = run_item(item, backend=backend, sd_scripts=sd_scripts, progress=_ProgressPrinter())
    data["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    result_file.write_text(json.dumps(data))
    pinned = data["cuda_visible_devices"]
    where = f" (CUDA_VISIBLE_DEVICES={pinned})" if pinned is not None else ""
    click.echo(f"done: {data.get('lora') or data.get('run_dir')}{where}")


COMMANDS += [queue_cmd, queue_item_cmd]


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
    from kohyagen.demo import run_demo

    # Progress goes to stderr, so it is shown with --json too (stdout stays pure JSON).
    click.echo(
        f"kohyagen demo in {directory.resolve()} (tiny random model, CPU, offline)", err=True
    )
    result = run_demo(directory, progress=_ProgressPrinter(), epochs=epochs)
    if as_json:
        emit_json(result.to_dict())
        return
    print_usage(result)
    click.echo(
        "\nThis LoRA comes from a tiny random model, so it is only a demonstration. For a "
        "real one: kohyagen run YOUR_IMAGES --name NAME --trigger WORD --model sd15 --gpu auto"
    )


COMMANDS.append(demo_cmd)
