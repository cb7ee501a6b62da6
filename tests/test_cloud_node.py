"""The task's run command, played on a fake node: the uploaded run folder, the images at
their mounted place, `kohyagen run` as the task's shell line runs it. It must accept the
folder (same inputs), move its recorded paths to the node's, and go on to training."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from kohyagen.cloud.jobs import managed_task
from kohyagen.cloud.plan import make_plan
from kohyagen.cloud.task import build_task
from kohyagen.run.manifest import Manifest
from kohyagen.toml_compat import tomllib
from tests.cloud_fixtures import _isolated, _no_api_server_left, prepare  # noqa: F401
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("managed", [False, True])
def test_the_node_continues_the_uploaded_run_up_to_training(tmp_path, subprocess_env, managed):
    from kohyagen.estimate.hardware import detect

    if detect().has_gpu:
        pytest.skip("on a GPU machine the node command would really train")
    manifest = prepare(
        tmp_path, seed=7, epochs=2, overrides=("network_dim=8", "sample_prompts=a b")
    )
    plan = make_plan(manifest)
    if managed:  # the run folder moves to the bucket mount on the first start
        task = managed_task(plan, manifest.data["inputs"], "s3://bucket/k")
    else:
        task = build_task(plan, manifest.data["inputs"])
    node = tmp_path / "node"
    upload = node / "sky_workdir"
    shutil.copytree(task["workdir"], upload)
    workdir = node / "kohyagen-results" / plan.cluster if managed else upload
    shutil.copytree(task["file_mounts"]["~/kohyagen-images"], node / "kohyagen-images")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kohyagen").write_text(f'#!/bin/sh\nexec {sys.executable} -m kohyagen "$@"\n')
    (bin_dir / "kohyagen").chmod(0o755)
    env = {
        **subprocess_env,
        "HOME": str(node),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO_ROOT),
    }
    proc = subprocess.run(
        ["bash", "-c", task["run"]], cwd=upload, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "the configs are for rtx4090" in proc.stderr  # reached training: inputs accepted
    assert "other inputs" not in proc.stderr
    moved = Manifest.load(workdir)
    assert moved.data["run_dir"] == str(workdir)
    assert moved.data["inputs"]["images"] == str(node / "kohyagen-images")
    assert moved.data["inputs"]["overrides"] == ["network_dim=8", "sample_prompts=a b"]
    training = tomllib.loads((workdir / "training_config.toml").read_text())
    assert training["saving"]["output_dir"] == str(workdir / "output")
