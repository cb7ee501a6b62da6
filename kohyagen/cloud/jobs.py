"""Many LoRAs as SkyPilot managed jobs: `kohyagen cloud queue RUN_DIR...`.

A managed job's cluster is torn down by SkyPilot's jobs controller when the job ends,
and a spot preemption starts it again on a new cluster (skypilot-facts.md §1.2): nothing
stays behind to copy results from. So each job keeps its run folder on a bucket the user
names (--bucket s3://..., gs://..., ...), mounted with a local cache that supports the
appends TensorBoard and train.log need. The first start copies the uploaded run folder
there; every later start (a recovery) finds the manifest and `kohyagen run` continues
from the last saved epoch (save_state is on for runs kohyagen prepared).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kohyagen.cloud.plan import CloudPlan, check_amount, make_plan
from kohyagen.cloud.records import note
from kohyagen.cloud.sky_api import SkyApi, validate_task
from kohyagen.cloud.task import _OnNode, _shell, build_task, run_command
from kohyagen.errors import BudgetExceeded, UsageError
from kohyagen.run.manifest import Manifest

REMOTE_RESULTS = "~/kohyagen-results"
BUCKET = re.compile(r"^(s3|gs|r2|cos|oci|azure|https)://[^/\s]+(/\S*)?$")
# RunPod and Vast cannot mount a bucket, only copy one once (runpod.py:37 in SkyPilot
# 0.14.1): a run folder there would not survive a recovery.
NO_MOUNT = ("runpod", "vast")


@dataclass(frozen=True)
class Submitted:
    run_dir: str
    cluster: str
    job_ids: tuple[int, ...]
    results: str  # where the run folder lives: the bucket URL and the run's folder in it
    cost: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_bucket(bucket: str | None, cloud: str) -> str:
    if not bucket:
        raise UsageError(
            "managed jobs need a bucket for their results: their cluster is gone when they end",
            hint="pass --bucket s3://my-bucket/kohyagen (or gs://, r2://, ...)",
        )
    if not BUCKET.match(bucket):
        raise UsageError(f"not a bucket URL: {bucket!r}", hint="e.g. s3://my-bucket/kohyagen")
    if cloud in NO_MOUNT:
        raise UsageError(
            f"{cloud} cannot mount a bucket, so a recovered job could not resume there",
            hint="use --cloud any or a cloud that mounts buckets (aws, gcp, azure, lambda...)",
        )
    return bucket.rstrip("/")


def managed_task(plan: CloudPlan, inputs: dict[str, Any], bucket: str, **kw: Any) -> dict[str, Any]:
    """build_task's task as a managed job: no autostop (the controller tears down), a
    recovery strategy, and the run folder on the mounted bucket."""
    task = build_task(plan, inputs, managed=True, **kw)
    task["file_mounts"][REMOTE_RESULTS] = {"source": bucket, "mode": "MOUNT_CACHED"}
    there = _OnNode(f"{REMOTE_RESULTS}/{plan.cluster}")
    manifest = _shell([_OnNode(f"{REMOTE_RESULTS}/{plan.cluster}/kohyagen.json")])
    # The first start copies the uploaded run folder to the bucket; a recovery finds it.
    first_start = f"mkdir -p {_shell([there])}\n[ -f {manifest} ] || cp -a . {_shell([there])}/\n"
    task["run"] = first_start + run_command(inputs, plan.preset, run_dir=there)
    return task


def submit_jobs(
    run_dirs: list[Path],
    api: SkyApi | None,
    *,
    bucket: str,
    cloud: str = "any",
    spot: bool = True,
    budget: float | None = None,
    max_price_per_hour: float | None = None,
    **task_kw: Any,
) -> list[Submitted]:
    """Plan, check and (api given) submit one managed job per prepared run folder.
    api None is the dry run: every task is built and validated, nothing is contacted."""
    bucket = check_bucket(bucket, cloud)
    planned = []
    for run_dir in run_dirs:
        manifest = Manifest.load(run_dir)
        if manifest is None:
            raise UsageError("not a kohyagen run folder (no kohyagen.json)", path=run_dir)
        plan = make_plan(manifest, cloud=cloud, spot=spot, max_price_per_hour=max_price_per_hour)
        task = managed_task(plan, manifest.data["inputs"], bucket, **task_kw)
        validate_task(task)
        planned.append((manifest, plan, task))
    check_amount(budget, "--budget")
    total = sum(p.cost[1] for _, p, _ in planned)
    if budget is not None and total > budget:
        raise BudgetExceeded(
            f"the {len(planned)} jobs may cost up to ${total:.2f} together, above your "
            f"budget of ${budget:.2f}; nothing was submitted",
            hint="raise --budget, queue fewer runs, or cap the price with --max-price-per-hour",
        )
    out = []
    for manifest, plan, task in planned:
        job_ids: list[int] = []
        if api is not None:
            note(manifest, cluster=plan.cluster, status="launching", cloud=cloud, managed=True)
            job_ids = api.jobs_launch(task, plan.cluster)
            note(manifest, status="submitted", job_ids=job_ids, bucket=bucket)
        results = f"{bucket}/{plan.cluster}"
        out.append(Submitted(str(plan.run_dir), plan.cluster, tuple(job_ids), results, plan.cost))
    return out
