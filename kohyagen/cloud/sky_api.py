"""The one seam between kohyagen and SkyPilot's Python API (skypilot 0.14.1).

Every call into `sky` is a method of SkyApi; the rest of kohyagen.cloud talks to this
class only, so tests replace it with a recorded fake and no test needs a cloud. SkyPilot
is imported inside the methods: `import sky` costs over a second and the [cloud] extra is
optional. Quirks of 0.14.1 this class absorbs (skypilot-facts.md):
- calls return a request id at once; `stream_and_get(rid)` waits (never with rid None,
  which would stream whatever request ran last on the server, §1.1);
- Task.from_yaml_config empties the dict it is given, so it gets a deep copy (§0.10);
- down of a cluster that is already gone raises ClusterDoesNotExist: that is success;
- there is no rsync-down: results come back by rsync over the ssh config SkyPilot
  writes for the cluster (~/.sky/generated/ssh/<cluster>, §3).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kohyagen.errors import KohyagenError, MissingDependency

PIN = "skypilot==0.14.1"
COPY_ATTEMPTS = 3
COPY_RETRY_S = 5.0
INSTALL_HINT = "pip install 'kohyagen[cloud]', then `sky check` to set up a cloud's credentials"


def load_sky() -> Any:
    """The sky module, or MissingDependency saying how to install the extra."""
    try:
        import sky
    except ImportError as exc:
        raise MissingDependency(
            "renting a GPU needs SkyPilot, which is not installed", hint=INSTALL_HINT
        ) from exc
    return sky


def validate_task(task: dict[str, Any]) -> Any:
    """SkyPilot's own loader on the task: raises KohyagenError with its message when it
    refuses it. Works offline and starts no API server (facts §1.3)."""
    sky = load_sky()
    try:
        return sky.Task.from_yaml_config(copy.deepcopy(task))
    except Exception as exc:  # SkyPilot raises ValueError, jsonschema errors, ...
        raise KohyagenError(f"SkyPilot refused the task: {exc}") from exc


def with_secrets(task: Any) -> Any:
    """A Hugging Face token set here goes to the node as a secret, for gated base models:
    set on the Task at launch, never written into the task YAML kohyagen prints and keeps
    (a `secrets:` key with no value there would be a managed-secret reference, task.py:800)."""
    token = os.environ.get("HF_TOKEN")
    if token:
        task.update_secrets({"HF_TOKEN": token})
    return task


@contextmanager
def _explained(what: str) -> Iterator[None]:
    """SkyPilot's own exceptions (NoCloudAccessError, ResourcesUnavailableError,
    CloudError, ...) as a KohyagenError that says what to check."""
    try:
        yield
    except KohyagenError:
        raise
    except Exception as exc:
        raise KohyagenError(
            f"{what}: {type(exc).__name__}: {exc}",
            hint="run `sky check` to see which clouds are set up; for a launch try --cloud "
            "any, more GPUs (a higher --max-price-per-hour) or --spot",
        ) from exc


@dataclass(frozen=True)
class ClusterInfo:
    name: str
    status: str  # INIT, UP, STOPPED, AUTOSTOPPING
    resources: str
    autostop: int | None  # idle minutes, None when off
    to_down: bool


class SkyApi:
    """SkyPilot's API, as much of it as kohyagen uses."""

    def launch(self, task: dict[str, Any], cluster: str, *, idle_minutes: int) -> int:
        """Provision (or reuse) the cluster and submit the task; the job id once submitted.
        idle_minutes and down are passed again because launch's arguments override the
        YAML's autostop (sdk.py:859)."""
        missing = [tool for tool in ("rsync", "ssh") if shutil.which(tool) is None]
        if missing:  # found out before renting, not after the training
            raise KohyagenError(
                f"{' and '.join(missing)} not found: the results come back over rsync/ssh",
                hint="install them (e.g. apt install rsync openssh-client), then run again",
            )
        sky = load_sky()
        with _explained(f"SkyPilot could not launch {cluster}"):
            request = sky.launch(
                with_secrets(validate_task(task)),
                cluster_name=cluster,
                idle_minutes_to_autostop=idle_minutes,
                down=True,
            )
            job_id, _handle = sky.stream_and_get(request)
        return job_id

    def tail_logs(self, cluster: str, job_id: int, *, output: IO[str] | None = None) -> int:
        """Follow the job's output until it ends; its exit code (0 ok, 100 failed, 101 not
        finished, 102 not found, 103 cancelled: sky.exceptions.JobExitCode)."""
        sky = load_sky()
        return int(sky.tail_logs(cluster, job_id, follow=True, output_stream=output))

    def down(self, cluster: str) -> bool:
        """Terminate the cluster now; False when it no longer existed."""
        sky = load_sky()
        try:
            sky.stream_and_get(sky.down(cluster))
        except sky.exceptions.ClusterDoesNotExist:
            return False
        return True

    def status(self, clusters: list[str] | None = None) -> list[ClusterInfo]:
        """The clusters SkyPilot knows (terminated ones are left out by SkyPilot)."""
        sky = load_sky()
        # AUTO refreshes clusters with autostop or spot: an autodowned one shows as gone.
        refresh = sky.StatusRefreshMode.AUTO
        with _explained("SkyPilot could not list the clusters"):
            records = sky.get(sky.status(cluster_names=clusters, refresh=refresh))
        found = []
        for r in records:  # pydantic records with dict-style access (responses.py:45)
            autostop = r.get("autostop")
            found.append(
                ClusterInfo(
                    name=r.get("name"),
                    status=str(getattr(r.get("status"), "value", r.get("status"))),
                    resources=str(r.get("resources_str") or ""),
                    autostop=autostop if autostop is not None and autostop >= 0 else None,
                    to_down=bool(r.get("to_down")),
                )
            )
        return found

    def jobs_launch(self, task: dict[str, Any], name: str) -> list[int]:
        """Submit a managed job (SkyPilot's jobs controller recovers it after a preemption)."""
        sky = load_sky()
        with _explained(f"SkyPilot could not submit the managed job {name}"):
            request = sky.jobs.launch(with_secrets(validate_task(task)), name=name)
            job_ids, _handle = sky.stream_and_get(request)
        return list(job_ids or [])

    def copy_down(self, cluster: str, remote: str, local: Path, *, exclude: list[str]) -> None:
        """rsync remote (a path on the node, relative to its home) into local."""
        config = Path.home() / ".sky" / "generated" / "ssh" / cluster
        ssh = f"ssh -F {config}" if config.is_file() else "ssh"
        command = ["rsync", "-az", "-e", ssh, *(f"--exclude={e}" for e in exclude)]
        command += [f"{cluster}:{remote.rstrip('/')}/", f"{local}/"]
        error = ""
        for attempt in range(COPY_ATTEMPTS):  # a dropped connection is worth a retry
            if attempt:
                time.sleep(COPY_RETRY_S)
            try:
                proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
            except (OSError, subprocess.TimeoutExpired) as exc:
                error = str(exc)
                continue
            if proc.returncode == 0:
                return
            error = f"rsync exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
        raise KohyagenError(f"copying the results back failed ({error})", path=local)


def sky_installed() -> bool:
    """Whether the [cloud] extra is there, without importing SkyPilot (a second's work)."""
    import importlib.util

    return importlib.util.find_spec("sky") is not None


def default_api() -> SkyApi:
    """The API the CLI uses; tests replace this function with one returning a fake."""
    return SkyApi()
