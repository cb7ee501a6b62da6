"""`kohyagen cloud run`: prepare here, then train on a rented GPU and bring the LoRA back.

The stages up to the estimate run on this machine (kohyagen.run.pipeline, so the run
folder is the same as `kohyagen run --prepare-only` makes, and resumable); the plan and
the task come next, written beside the run (sky-task.yaml); the guard refuses a plan
above --budget and asks (a callback; the library never prompts); then launch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from kohyagen.cloud.launch import CloudOutcome, launch_run
from kohyagen.cloud.plan import (
    DEFAULT_DISK_GB,
    DEFAULT_IDLE_MINUTES,
    CloudPlan,
    check_amount,
    check_budget,
    make_plan,
)
from kohyagen.cloud.records import LIVE_STATES, PREFIX, note, recorded
from kohyagen.cloud.sky_api import SkyApi, validate_task
from kohyagen.cloud.task import DEFAULT_IMAGE, build_task, kohyagen_source, task_yaml, write_task
from kohyagen.errors import KohyagenError, UsageError
from kohyagen.run.manifest import Manifest
from kohyagen.run.pipeline import RunOptions

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CloudRequest:
    run: RunOptions
    cloud: str = "any"
    spot: bool = False
    max_price_per_hour: float | None = None
    budget: float | None = None
    idle_minutes: int = DEFAULT_IDLE_MINUTES
    disk_gb: int = DEFAULT_DISK_GB
    image: str = DEFAULT_IMAGE


@dataclass(frozen=True)
class Planned:
    plan: CloudPlan
    task: dict[str, Any]
    task_path: Path
    already_trained: bool

    @property
    def yaml(self) -> str:
        return task_yaml(self.task)


def prepare(request: CloudRequest, progress: Progress) -> Manifest:
    """The local stages (check .. estimate) of the run; the prepared manifest."""
    from kohyagen.run.pipeline import run_pipeline

    check_amount(request.budget, "--budget")
    check_amount(request.max_price_per_hour, "--max-price-per-hour")
    if request.run.gpu.lower() in ("auto", "cpu"):
        raise UsageError(
            f"--gpu {request.run.gpu} means this machine's GPU; a rented one needs a preset",
            hint="e.g. --gpu rtx4090 (other GPUs whose memory fits are offered too)",
        )
    # The cloud guard replaces the pipeline's budget check (its price is the rental's).
    options = replace(request.run, budget=None)
    run_pipeline(
        options, progress=lambda stage, line: progress(f"[{stage}] {line}"), stop_after="estimate"
    )
    manifest = Manifest.load(options.resolved_run_dir())
    assert manifest is not None  # run_pipeline made it
    return manifest


def plan_run(request: CloudRequest, manifest: Manifest) -> Planned:
    """Plan, build, validate (SkyPilot's loader) and write the task; apply the guard."""
    plan = make_plan(
        manifest,
        cloud=request.cloud,
        spot=request.spot,
        max_price_per_hour=request.max_price_per_hour,
        budget=request.budget,
        idle_minutes=request.idle_minutes,
        disk_gb=request.disk_gb,
        prices_file=request.run.prices_file,
    )
    task = build_task(plan, manifest.data["inputs"], image=request.image, source=kohyagen_source())
    validate_task(task)
    path = write_task(plan, task)
    if recorded(manifest).get("status") not in LIVE_STATES:
        note(manifest, cluster=plan.cluster, status="planned", cloud=plan.cloud)
    check_budget(plan)
    return Planned(plan, task, path, manifest.is_finished("pick"))


def run_remote(
    planned: Planned,
    api: SkyApi,
    *,
    confirm: Callable[[CloudPlan], bool] | None = None,
    progress: Progress = lambda line: None,
    output: IO[str] | None = None,
) -> CloudOutcome | None:
    """Launch the planned task (after confirm, when given); None when not confirmed."""
    if planned.already_trained:
        raise KohyagenError(
            "this run has already been trained: nothing to rent",
            path=planned.plan.run_dir,
            hint="pass --restart to train it again from the start",
        )
    if confirm is not None and not confirm(planned.plan):
        return None
    others = [
        c.name for c in api.status() if c.name.startswith(PREFIX) and c.name != planned.plan.cluster
    ]
    if others:
        progress(
            f"note: other kohyagen clusters are up and billing: {', '.join(others)} "
            "(`kohyagen cloud down NAME` ends them)"
        )
    return launch_run(planned.plan, planned.task, api, progress=progress, output=output)
