"""Shared pieces of the cloud tests: a prepared run folder and a recorded fake of
kohyagen.cloud.sky_api.SkyApi that plays the node (upload, training, results)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kohyagen.cloud.sky_api import ClusterInfo
from kohyagen.run.manifest import Manifest
from kohyagen.run.pipeline import RunOptions, run_pipeline
from tests.conftest import make_image


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No user prices, no SkyPilot API server (it could never start one), a temp HOME."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SKYPILOT_DISABLE_LOCAL_API_SERVER", "1")
    monkeypatch.setenv("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")


def sky_server_pids() -> set[int]:
    """Processes running SkyPilot's API server on this machine (whoever started them)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in out.splitlines() if "sky.server.server" in line}


@pytest.fixture(scope="module", autouse=True)
def _no_api_server_left():
    before = sky_server_pids()
    yield
    assert sky_server_pids() <= before, "a test left a SkyPilot API server running"


def make_images(folder: Path, n: int = 4) -> Path:
    for i in range(n):
        make_image(folder / f"{i}.png", size=(512, 512), color=(i * 40, 10, 10))
        (folder / f"{i}.txt").write_text(f"sks, picture {i}\n")
    return folder


def prepare(tmp_path: Path, *, name: str = "anna", gpu: str = "rtx4090", **kw: Any) -> Manifest:
    """A run folder prepared up to its estimate by the real pipeline (no training)."""
    images = make_images(tmp_path / "images")
    options = RunOptions(
        images=images, name=name, trigger="sks", gpu=gpu, run_dir=tmp_path / "runs" / name, **kw
    )
    run_pipeline(options, stop_after="estimate")
    manifest = Manifest.load(options.resolved_run_dir())
    assert manifest is not None
    return manifest


class FakeSkyApi:
    """SkyApi with every call recorded. The 'node' is a folder: launch uploads the run
    folder into it, tail_logs 'trains' there (with the node's own paths in its manifest,
    as a real `kohyagen run` on the node leaves them), copy_down brings it back."""

    def __init__(self, node: Path, *, exit_code: int = 0, raise_in: dict | None = None):
        self.node = node
        self.exit_code = exit_code
        self.raise_in = raise_in or {}
        self.calls: list[tuple] = []
        self.live: list[ClusterInfo] = []

    def _maybe_raise(self, name: str) -> None:
        if name in self.raise_in:
            raise self.raise_in[name]

    def launch(self, task: dict, cluster: str, *, idle_minutes: int) -> int:
        self.calls.append(("launch", cluster, idle_minutes))
        self._maybe_raise("launch")
        shutil.copytree(task["workdir"], self.node / "sky_workdir")
        self.live.append(ClusterInfo(cluster, "UP", "1x RTX4090", idle_minutes, True))
        return 7

    def tail_logs(self, cluster: str, job_id: int, *, output=None) -> int:
        self.calls.append(("tail_logs", cluster, job_id))
        self._maybe_raise("tail_logs")
        workdir = self.node / "sky_workdir"
        manifest = Manifest.load(workdir)
        from kohyagen.run.relocate import relocate

        relocate(manifest, [(manifest.data["run_dir"], str(workdir))])
        manifest.data["run_dir"] = str(workdir)
        (workdir / "train.log").write_text("epoch 1/1\n")
        if self.exit_code == 0:
            (workdir / "output").mkdir(exist_ok=True)
            lora = workdir / "output" / "anna.safetensors"
            lora.write_bytes(b"lora")
            (workdir / "summary.md").write_text("# report\n")
            for stage in ("train", "report"):
                manifest.finish(stage, outputs={})
            manifest.finish("pick", outputs={"lora": str(lora), "epoch": 1, "reason": "last"})
        else:
            manifest.fail("train", "CUDA out of memory")
        manifest.save()
        return self.exit_code

    def copy_down(self, cluster: str, remote: str, local: Path, *, exclude: list[str]) -> None:
        self.calls.append(("copy_down", cluster, remote, str(local), tuple(exclude)))
        self._maybe_raise("copy_down")
        names = {e.rstrip("/") for e in exclude}
        shutil.copytree(
            self.node / remote, local, dirs_exist_ok=True, ignore=lambda d, n: names & set(n)
        )

    def down(self, cluster: str) -> bool:
        self.calls.append(("down", cluster))
        self._maybe_raise("down")
        existed = any(c.name == cluster for c in self.live)
        self.live = [c for c in self.live if c.name != cluster]
        return existed

    def status(self, clusters: list[str] | None = None) -> list[ClusterInfo]:
        self.calls.append(("status",))
        return list(self.live)

    def jobs_launch(self, task: dict, name: str) -> list[int]:
        self.calls.append(("jobs_launch", name))
        return [len([c for c in self.calls if c[0] == "jobs_launch"])]

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]
