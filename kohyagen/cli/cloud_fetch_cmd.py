"""`kohyagen cloud fetch`: a managed job's results from its bucket into the run folder."""

from __future__ import annotations

from pathlib import Path

import click

from kohyagen.cli.output import emit_json


@click.command("fetch")
@click.argument(
    "run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False)
)
@click.option("--from", "source", type=click.Path(path_type=Path, file_okay=False),
              help="A folder holding the job's run folder, copied from the bucket by hand "
              "(for buckets kohyagen cannot download: azure, oci, cos, https).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print what was fetched as JSON.")
def cloud_fetch_cmd(run_dirs: tuple[Path, ...], source: Path | None, as_json: bool) -> None:
    """Bring managed jobs' results (`kohyagen cloud queue`) back from their bucket into
    each run folder, with its paths made local: then `kohyagen report` and `pick` read it.
    Needs the bucket's own tool (aws for s3:// and r2://, gsutil for gs://), not SkyPilot."""
    from kohyagen.cloud.fetch import fetch_results
    from kohyagen.errors import UsageError

    if source is not None and len(run_dirs) > 1:
        raise UsageError("--from holds one job's run folder: give one RUN_DIR with it")
    done = [fetch_results(run_dir, source=source) for run_dir in run_dirs]
    if as_json:
        emit_json([d.to_dict() for d in done])
        return
    for d in done:
        click.echo(f"{d.run_dir}: fetched {', '.join(d.entries)} from {d.source}")
