"""`kohyagen cloud run`: prepare here, train on a rented GPU, results back, torn down."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohyagen.cli import run_options as opt
from kohyagen.cli.output import emit_json, stdout_console

if TYPE_CHECKING:
    from kohyagen.cloud.plan import CloudPlan


def need_sky() -> None:
    """Every subcommand needs the [cloud] extra (--help does not)."""
    from kohyagen.cloud.sky_api import INSTALL_HINT, sky_installed
    from kohyagen.errors import MissingDependency

    if not sky_installed():
        raise MissingDependency(
            "`kohyagen cloud` needs SkyPilot, which is not installed", hint=INSTALL_HINT
        )


def _echo(line: str) -> None:
    click.echo(line, err=True)


def print_plan(plan: CloudPlan) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"GPUs SkyPilot may rent for {plan.name} (it takes the cheapest it gets)")
    for column in ("GPU", "memory", "clouds", "$/hour", "billed minutes", "cost"):
        table.add_column(column)
    for c in plan.candidates:
        clouds = ", ".join(sorted({cloud for _, cloud in c.offers}))
        table.add_row(
            escape(c.preset),
            f"{c.vram_gb:g} GB",
            clouds,
            f"{c.price_per_hour:.2f}",
            f"{c.minutes[0]:.0f}–{c.minutes[1]:.0f}",
            f"${c.cost[0]:.2f}–{c.cost[1]:.2f}",
        )
    console = stdout_console()
    console.print(table)
    console.print(f"needs about {plan.need_gb:g} GB of GPU memory; where each $/hour is from:")
    for c in plan.candidates:
        # SkyPilot's cached catalog, kohyagen's table, prices.toml or the preset's typical
        console.print(f"  {escape(c.preset)}: {escape(c.price_source)}")
    if plan.spot:
        console.print("  (a price not marked spot is on-demand: spot is usually cheaper)")
    low, high = plan.cost
    console.print(
        f"[bold]expected total: ${low:.2f} – ${high:.2f}[/bold]"
        + (f" (budget ${plan.budget:.2f})" if plan.budget is not None else "")
    )
    console.print(
        f"teardown: kohyagen takes the cluster down when the job ends, fails or is "
        f"interrupted; should this machine be gone, the cluster downs itself after "
        f"{plan.idle_minutes} idle minutes (at most ${plan.idle_cost:.2f} more)"
    )


def _confirm(yes: bool) -> Callable[[CloudPlan], bool] | None:
    if yes:
        return None
    if not sys.stdin.isatty():
        from kohyagen.errors import UsageError

        raise UsageError("renting a GPU costs money: confirm with -y when not at a terminal")

    def confirm(plan: CloudPlan) -> bool:
        print_plan(plan)
        return click.confirm("rent it and train?", default=False, err=True)

    return confirm


@click.command("run")
@opt.images_argument()
@opt.name_option()
@opt.trigger_option()
@click.option(
    "--model", type=click.Choice(["sd15", "sd2", "sdxl"]), default="sd15", show_default=True
)
@click.option("--base-model", help="Local checkpoint/diffusers folder (uploaded) or a hub repo id.")
@click.option(
    "--gpu", default="rtx4090", show_default=True, help="GPU preset the configs are made for."
)
@click.option(
    "--cloud",
    "cloud_name",
    default="any",
    show_default=True,
    help="any, runpod, vast, lambda, aws, gcp, azure, ...",
)
@click.option("--spot", is_flag=True, help="Interruptible instances (cheaper; resumes after).")
@click.option(
    "--max-price-per-hour", type=float, help="Rent no GPU above this many dollars an hour."
)
@opt.budget_option("Refuse when the expected total is above this many dollars.")
@opt.backend_option(
    "kohya sd-scripts (installed on the node at a pinned commit) or the builtin trainer."
)
@opt.run_dir_option()
@opt.epochs_option()
@opt.set_option()
@opt.seed_option("Training seed.")
@opt.prices_option()
@click.option(
    "--idle-minutes", type=int, default=10, show_default=True, help="Autodown window after the job."
)
@click.option(
    "--disk", "disk_gb", type=int, default=100, show_default=True, help="Disk size in GB."
)
@click.option(
    "--image", help="Docker image for the node (default: an official CUDA PyTorch image)."
)
@opt.restart_option()
@click.option(
    "--dry-run", is_flag=True, help="Prepare, print the task YAML and the cost plan; rent nothing."
)
@opt.yes_option("Do not ask before renting.")
@opt.json_option()
def cloud_run_cmd(images: Path, name: str, trigger: str, model: str, base_model: str | None,
                  gpu: str, cloud_name: str, spot: bool, max_price_per_hour: float | None,
                  budget: float | None, backend: str, run_dir: Path | None, epochs: int | None,
                  overrides: tuple[str, ...], seed: int | None, prices_file: Path | None,
                  idle_minutes: int, disk_gb: int, image: str | None, restart: bool,
                  dry_run: bool, yes: bool, as_json: bool) -> None:  # fmt: skip
    """Prepare IMAGES here (check, captions, configs, estimate), then train on a rented GPU:
    results come back into the run folder and the machine is torn down on success, failure
    and Ctrl-C. Run it again to continue an interrupted run."""
    need_sky()
    from kohyagen.cloud import remote, sky_api
    from kohyagen.cloud.task import DEFAULT_IMAGE
    from kohyagen.run.pipeline import RunOptions

    request = remote.CloudRequest(
        run=RunOptions(images=images, name=name, trigger=trigger, model=model,
                       base_model=base_model, gpu=gpu, backend=backend, run_dir=run_dir,
                       epochs=epochs, overrides=overrides, seed=seed, prices_file=prices_file,
                       restart=restart),
        cloud=cloud_name, spot=spot, max_price_per_hour=max_price_per_hour, budget=budget,
        idle_minutes=idle_minutes, disk_gb=disk_gb, image=image or DEFAULT_IMAGE,
    )  # fmt: skip
    confirm = None if dry_run else _confirm(yes)
    manifest = remote.prepare(request, _echo)
    planned = remote.plan_run(request, manifest)
    if dry_run:
        if as_json:
            emit_json({"plan": planned.plan.to_dict(), "task": planned.task,
                       "task_file": str(planned.task_path)})  # fmt: skip
            return
        click.echo(planned.yaml)
        print_plan(planned.plan)
        click.echo(f"task written to {planned.task_path} (dry run: nothing was rented)")
        return
    if confirm is None and not as_json:
        print_plan(planned.plan)
    outcome = remote.run_remote(
        planned,
        sky_api.default_api(),
        confirm=confirm,
        progress=_echo,
        output=sys.stderr if as_json else None,  # stdout stays pure JSON
    )
    if outcome is None:
        click.echo("not confirmed: nothing was rented", err=True)
        return
    if as_json:
        emit_json({"plan": planned.plan.to_dict(), **outcome.to_dict()})
        return
    click.echo(f"LoRA: {outcome.lora}" if outcome.lora else f"results in {outcome.run_dir}")
    click.echo(f"report: {outcome.run_dir / 'summary.md'}   ({outcome.cluster} is down)")
