"""`kohyagen cloud status`, `down` and `queue`: the clusters kohyagen rented, and many
LoRAs as SkyPilot managed jobs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from kohyagen.cli.cloud_run_cmd import need_sky
from kohyagen.cli.output import emit_json, stdout_console

RUNS = Path("runs")


@click.command("status")
@click.option("--runs", "roots", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Run folders, or folders of them, to look in (default: runs/).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the clusters as JSON.")
def cloud_status_cmd(roots: tuple[Path, ...], as_json: bool) -> None:
    """Clusters recorded in run folders and every kohyagen cluster SkyPilot knows:
    which are up (and billing), with their autodown."""
    need_sky()
    from rich.table import Table

    from kohyagen.cloud import records, sky_api

    rows = records.cloud_status(sky_api.default_api(), list(roots) or [RUNS])
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        click.echo("no kohyagen clusters: nothing is billing")
        return
    table = Table(title="kohyagen clusters")
    for column in ("cluster", "run folder", "recorded", "now", "autodown", "resources"):
        table.add_column(column, overflow="fold")
    for r in rows:
        autodown = f"{r.autostop} idle min" if r.autostop is not None and r.to_down else "-"
        table.add_row(r.cluster, r.run_dir or "-", r.recorded or "-",
                      r.live or "gone (not billing)", autodown, r.resources)  # fmt: skip
    stdout_console().print(table)
    if any(r.recorded == "submitted" for r in rows):
        # a managed job's cluster is gone when it ends; its results wait on the bucket
        click.echo("managed jobs keep their results on the bucket: `kohyagen cloud fetch "
                   "RUN_DIR` copies them into the run folder")  # fmt: skip


@click.command("down")
@click.argument("targets", nargs=-1)
@click.option("--runs", "roots", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Run folders, or folders of them, to look in (default: runs/).")  # fmt: skip
@click.option("--yes", "-y", is_flag=True, help="Do not ask before downing every cluster.")
def cloud_down_cmd(targets: tuple[str, ...], roots: tuple[Path, ...], yes: bool) -> None:
    """Terminate clusters now: by cluster name, run name or run folder; without one, every
    kohyagen cluster that is up (asks first unless -y)."""
    need_sky()
    from kohyagen.cloud import records, sky_api

    if (
        not targets
        and not yes
        and not click.confirm(
            "take every kohyagen cluster down (running trainings stop)?", default=True, err=True
        )
    ):
        return
    done = records.take_down(sky_api.default_api(), list(targets), list(roots) or [RUNS])
    if not done:
        click.echo("no kohyagen cluster is up")
    for cluster, existed in done:
        click.echo(f"{cluster}: {'down' if existed else 'already gone'}")


@click.command("queue")
@click.argument(
    "run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False)
)
@click.option("--bucket", help="Bucket for the run folders, e.g. s3://my-bucket/kohyagen.")
@click.option(
    "--cloud",
    "cloud_name",
    default="any",
    show_default=True,
    help="any, aws, gcp, azure, lambda, ...",
)
@click.option(
    "--spot/--no-spot",
    default=True,
    show_default=True,
    help="Spot instances, recovered on preemption.",
)
@click.option(
    "--max-price-per-hour", type=float, help="Rent no GPU above this many dollars an hour."
)
@click.option("--budget", type=float, help="Refuse when all jobs together may cost more.")
@click.option("--dry-run", is_flag=True, help="Build and validate every task; submit nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before submitting.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
def cloud_queue_cmd(run_dirs: tuple[Path, ...], bucket: str | None, cloud_name: str, spot: bool,
                    max_price_per_hour: float | None, budget: float | None, dry_run: bool,
                    yes: bool, as_json: bool) -> None:  # fmt: skip
    """Train prepared run folders (`kohyagen run --prepare-only --gpu PRESET`) as SkyPilot
    managed jobs: spot with recovery, each resuming from its last saved epoch, results on
    the bucket."""
    need_sky()
    from kohyagen.cloud import jobs, sky_api

    kwargs: dict[str, Any] = {"bucket": bucket, "cloud": cloud_name, "spot": spot, "budget": budget,
              "max_price_per_hour": max_price_per_hour}  # fmt: skip
    planned = jobs.submit_jobs(list(run_dirs), None, **kwargs)
    if not as_json:
        for job in planned:
            click.echo(f"{job.run_dir}: {job.cluster}, ${job.cost[0]:.2f} – ${job.cost[1]:.2f}, "
                       f"results in {job.results}")  # fmt: skip
    if dry_run:
        if as_json:
            emit_json([j.to_dict() for j in planned])
        return
    if not yes:
        if not sys.stdin.isatty():
            from kohyagen.errors import UsageError

            raise UsageError("renting GPUs costs money: confirm with -y when not at a terminal")
        if not click.confirm(f"submit {len(planned)} managed job(s)?", default=False, err=True):
            return
    submitted = jobs.submit_jobs(list(run_dirs), sky_api.default_api(), **kwargs)
    if as_json:
        emit_json([j.to_dict() for j in submitted])
        return
    for job in submitted:
        click.echo(f"{job.cluster}: job {', '.join(map(str, job.job_ids))} submitted "
                   "(`sky jobs queue` follows it; `kohyagen cloud fetch "
                   f"{job.run_dir}` brings its results back)")  # fmt: skip
