"""`kohyagen estimate`: steps, time, VRAM fit and cost by provider, before renting."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohyagen.cli.dataset_cmd import MODEL_CHOICES
from kohyagen.cli.output import emit_json, stdout_console
from kohyagen.cli.run_progress import minutes

if TYPE_CHECKING:
    from kohyagen.estimate.plan import Estimate

COMMANDS: list[click.Command] = []


def _dollars(span: tuple[float, float]) -> str:
    low, high = span
    return f"${low:.2f}" if abs(high - low) < 0.005 else f"${low:.2f} – ${high:.2f}"


def resolve_gpu(gpu: str) -> tuple[str, str | None]:
    """--gpu value -> (preset name or "cpu", a note on what was detected)."""
    if gpu.lower() != "auto":
        return gpu, None
    from kohyagen.estimate.hardware import detect_preset

    preset, hardware = detect_preset()
    if preset == "cpu":
        return preset, hardware.note
    return preset, f"{hardware.note}: {hardware.gpus[0].name} → preset {preset}"


def print_estimate(est: Estimate, *, gpu_note: str | None = None) -> None:
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
        f"time:  [bold]{minutes(est.total_minutes)}[/bold] "
        f"(training {minutes(est.train_minutes)}, loading and caching "
        f"{minutes(est.overhead_minutes)})"
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
                minutes(c.setup_minutes),
                _dollars(c.cost),
                c.basis,
            )
        console.print(table)
    if est.own_cost is not None:
        console.print(f"at your ${est.own_price_per_hour:.2f}/hour: {_dollars(est.own_cost)}")
    for note in est.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    console.print("[dim]sources: kohyagen/templates/throughput.toml, providers.toml[/dim]")


_PRICES_EPILOG = """\b
Your own prices: ~/.config/kohyagen/prices.toml ($XDG_CONFIG_HOME/kohyagen/prices.toml)
or --prices FILE, in dollars per hour; a provider of the same name replaces the default:
  [providers.myhost]
  label = "My usual host"
  setup_minutes = [2, 5]
  prices = { rtx4090 = 0.42, a100-40 = [1.10, 1.40] }
Figures and their sources: templates/throughput.toml and templates/providers.toml.
"""


@click.command("estimate", epilog=_PRICES_EPILOG)
@click.argument("dataset", required=False, type=click.Path(path_type=Path))  # or CONFIG.toml
@click.option("--images", type=click.IntRange(min=1), help="Number of images (without DATASET).")
@click.option(
    "--model",
    type=click.Choice(MODEL_CHOICES),
    default=None,
    help="Base model family. Default: the config's, else sd15.",
)
@click.option(
    "--gpu",
    default="auto",
    show_default=True,
    help="GPU preset name (rtx4090, a100, 24gb, ...) or auto.",
)
@click.option("--epochs", type=click.IntRange(min=1),
              help="Default: the config's, else what `kohyagen config` would choose, else 10.")  # fmt: skip
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    help="Repeats per image. Default: 10 with --images (the guide's folder), what "
    "`kohyagen run` would choose for a plain folder; an N_name/ train dir's folders say it.",
)
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Default: the config's, else the GPU preset's.")  # fmt: skip
@click.option("--resolution", type=click.IntRange(min=64), help="Default: the model's native.")
@click.option("--gradient-checkpointing", is_flag=True,
              help="Assume gradient checkpointing (default: where the config or preset uses it).")  # fmt: skip
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
    model: str | None,
    gpu: str,
    epochs: int | None,
    repeats: int | None,
    batch_size: int | None,
    resolution: int | None,
    gradient_checkpointing: bool,
    prices_file: Path | None,
    price_per_hour: float | None,
    as_json: bool,
) -> None:
    """Steps, wall time, VRAM fit and cost by provider of a LoRA run, before renting."""
    from kohyagen.errors import UsageError
    from kohyagen.estimate.from_config import plan_for
    from kohyagen.estimate.plan import estimate, load_prices
    from kohyagen.validate import number_problem, require

    if price_per_hour is not None:
        # NaN compares false with every bound, so it would pass any budget guard
        require(number_problem(price_per_hour, "--price-per-hour", low=0), hint="e.g. 2.5")
    if (dataset is None) == (images is None):
        raise UsageError("give either a DATASET folder (or a CONFIG.toml) or --images N")
    gpu_name, gpu_note = resolve_gpu(gpu)
    plan = plan_for(
        dataset, images=images, model=model or "sd15", gpu=gpu_name, epochs=epochs,
        repeats=repeats,
    )  # fmt: skip
    values = plan.values
    if plan.images is None:
        raise UsageError("the config's dataset has no images to count", hint="pass --images N")
    est = estimate(
        model=model or plan.model or "sd15",
        gpu=gpu_name,
        images=plan.images,
        images_x_repeats=plan.images_x_repeats,
        epochs=values["epochs"],
        batch_size=batch_size or values.get("batch_size") or 2,
        resolution=resolution or values.get("resolution"),
        steps_per_epoch=None if batch_size else plan.steps_per_epoch,
        gradient_accumulation_steps=values.get("gradient_accumulation_steps") or 1,
        gradient_checkpointing=gradient_checkpointing or bool(values.get("gradient_checkpointing")),
        optimizer=values.get("optimizer"),
        unet_only=values.get("unet_only"),
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
