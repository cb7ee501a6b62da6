"""`kohyagen cloud`: train on a rented GPU through SkyPilot (the [cloud] extra).

The group only; run is in cloud_run_cmd, status, down and queue in cloud_manage_cmd, fetch
in cloud_fetch_cmd. Each calls one function of kohyagen.cloud. SkyPilot is needed by every
subcommand but fetch (it validates the task even in a dry run), so each checks for it
first and says how to install it; fetch needs only the bucket's own tool.
"""

from __future__ import annotations

import click

from kohyagen.cli.cloud_fetch_cmd import cloud_fetch_cmd
from kohyagen.cli.cloud_manage_cmd import cloud_down_cmd, cloud_queue_cmd, cloud_status_cmd
from kohyagen.cli.cloud_run_cmd import cloud_run_cmd

COMMANDS: list[click.Command] = []


@click.group("cloud")
def cloud_group() -> None:
    """Train on a rented GPU (RunPod, Vast.ai, Lambda, AWS, GCP, ... through SkyPilot),
    with the results copied back and the machine torn down on every way out."""


for _command in (cloud_run_cmd, cloud_status_cmd, cloud_down_cmd, cloud_queue_cmd,
                 cloud_fetch_cmd):
    cloud_group.add_command(_command)
COMMANDS.append(cloud_group)
