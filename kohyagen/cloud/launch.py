"""Launch a prepared run on a rented GPU, follow it, copy the results back, tear down.

The cluster is torn down on every way out of launch_run: success, a failed training, an
error, Ctrl-C. Two guards stand behind that call: the autodown SkyPilot arms on the node
(idle_minutes after the job, even with this machine gone) and the cluster name recorded
in the manifest before launch, for `kohyagen cloud down`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kohyagen.cloud.fetch import adopt_node_manifest
from kohyagen.cloud.plan import CloudPlan
from kohyagen.cloud.records import note, recorded
from kohyagen.cloud.sky_api import SkyApi
from kohyagen.errors import KohyagenError, TrainingFailed
from kohyagen.run.manifest import Manifest

REMOTE_RUN_DIR = "sky_workdir"  # SkyPilot's workdir on the node, relative to its home
# Not brought back: the prepared copy of the images (this machine has it) and files
# that only steer the upload.
NOT_COPIED = ["training_data/", ".skyignore", "sky-task.yaml"]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class CloudOutcome:
    cluster: str
    job_id: int | None
    exit_code: int | None
    run_dir: Path
    lora: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "job_id": self.job_id,
            "exit_code": self.exit_code,
            "run_dir": str(self.run_dir),
            "lora": str(self.lora) if self.lora else None,
        }


def launch_run(
    plan: CloudPlan,
    task: dict[str, Any],
    api: SkyApi,
    *,
    progress: Progress = lambda line: None,
    output: IO[str] | None = None,
) -> CloudOutcome:
    """Run the task on a new cluster; results land in plan.run_dir. Raises TrainingFailed
    when the job failed (its logs are copied back first), KohyagenError when the cluster
    could not be taken down (with the command that does it)."""
    manifest = _load(plan.run_dir)
    note(manifest, cluster=plan.cluster, status="launching", cloud=plan.cloud, job_id=None)
    job_id = code = None
    copy_error: KohyagenError | None = None
    downed = False
    try:
        progress(f"launching {plan.cluster} (SkyPilot picks the cheapest GPU it can get)")
        job_id = api.launch(task, plan.cluster, idle_minutes=plan.idle_minutes)
        note(manifest, status="running", job_id=job_id)
        code = api.tail_logs(plan.cluster, job_id, output=output)
        progress(f"job {job_id} ended with exit code {code}: copying the results back")
        note(manifest, status="copying", exit_code=code)
        try:
            copy_results(api, plan)
        except KohyagenError as exc:
            copy_error = exc
    finally:
        downed = teardown(api, plan, progress)
    if not downed:
        raise KohyagenError(
            f"the cluster {plan.cluster} could not be taken down and may still be billing "
            f"(it takes itself down {plan.idle_minutes} idle minutes after the job)",
            path=plan.run_dir,
            hint=f"run `kohyagen cloud down {plan.cluster}` (or `sky down {plan.cluster}`)",
        )
    if code != 0:
        raise TrainingFailed(
            f"the training on {plan.cluster} failed (SkyPilot job exit code {code})",
            path=plan.run_dir / "train.log",
            hint="read train.log (copied back when it could be); run the same `kohyagen cloud "
            "run` again to continue from the last saved epoch",
        )
    if copy_error is not None:
        raise KohyagenError(
            f"the training finished but its results could not be copied back: "
            f"{copy_error.message}; the cluster is down, so nothing stays billing",
            path=plan.run_dir,
            hint="check rsync/ssh on this machine, then run the same `kohyagen cloud run` "
            "again to train once more",
        )
    pick = _load(plan.run_dir).outputs("pick")
    lora = Path(pick["lora"]) if pick.get("lora") else None
    return CloudOutcome(plan.cluster, job_id, code, plan.run_dir, lora)


def teardown(api: SkyApi, plan: CloudPlan, progress: Progress) -> bool:
    """Down the cluster; record the outcome. Never raises (it runs in a finally)."""
    manifest = _load(plan.run_dir)
    progress(f"taking {plan.cluster} down")
    try:
        existed = api.down(plan.cluster)
    except (Exception, KeyboardInterrupt) as exc:
        note(manifest, status="down_failed", error=f"{type(exc).__name__}: {exc}")
        progress(
            f"could not take {plan.cluster} down ({type(exc).__name__}: {exc}); run "
            f"`kohyagen cloud down {plan.cluster}`"
        )
        return False
    note(manifest, status="down", error=None)
    progress(f"{plan.cluster} is down" if existed else f"{plan.cluster} was already gone")
    return True


def copy_results(api: SkyApi, plan: CloudPlan) -> None:
    """rsync the run folder back, then make its recorded paths local again."""
    local = _load(plan.run_dir)
    record = recorded(local)
    inputs = dict(local.data["inputs"])
    api.copy_down(plan.cluster, REMOTE_RUN_DIR, plan.run_dir, exclude=NOT_COPIED)
    adopt_node_manifest(plan.run_dir, inputs, record)


def _load(run_dir: Path) -> Manifest:
    manifest = Manifest.load(run_dir)
    if manifest is None:
        raise KohyagenError("the run folder has no kohyagen.json", path=run_dir)
    return manifest
