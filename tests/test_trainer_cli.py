"""`kohyagen train --backend builtin`, then `pick`: the builtin run reads as a kohya run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from tests.trainer_helpers import make_train_dir, write_config


def test_kohyagen_train_builtin_then_pick(tmp_path, subprocess_env):
    from kohyagen.run.tiny import make_tiny_pipeline

    model = make_tiny_pipeline(tmp_path / "model", "sd15")
    data = make_train_dir(tmp_path / "data", n=2, repeats=2)
    config = write_config(tmp_path, model, data=data, validation_split=0.5, validation_seed=3)
    env = dict(subprocess_env, OMP_NUM_THREADS="1")
    run_dir = tmp_path / "runs" / "tl"
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "kohyagen",
            "train",
            str(config),
            "--backend",
            "builtin",
            "--run-dir",
            str(run_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert train.returncode == 0, (train.stdout[-3000:], train.stderr[-3000:])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert summary["epochs"] and summary["steps"]
    files = sorted(c["file"] for c in summary["checkpoints"])
    assert files == ["tl-000001.safetensors", "tl.safetensors"]
    assert summary["validation_loss_per_epoch"]  # the validation split reached the report

    pick = subprocess.run(
        [sys.executable, "-m", "kohyagen", "pick", str(run_dir), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert pick.returncode == 0, pick.stderr[-2000:]
    choice = json.loads(pick.stdout)
    assert choice["path"].endswith(".safetensors")
