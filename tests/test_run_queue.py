"""kohyagen queue: items run in child processes; a failure does not stop the rest."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kohyagen.cli import main
from kohyagen.errors import UsageError
from kohyagen.run.manifest import STAGES, Manifest
from kohyagen.run.queue import run_queue, worker_gpus
from kohyagen.run.queue_item import CONFIG, RUN_DIR, classify
from tests.test_run_hardware import fake_nvidia_smi


def finished_run(tmp_path, name):
    """A run folder whose manifest says every stage is done (nothing left to train)."""
    images = tmp_path / f"images_{name}"
    images.mkdir()
    run_dir = tmp_path / name
    m = Manifest.create(
        run_dir,
        inputs={"images": str(images.resolve()), "name": name, "trigger": "sks",
                "model": "sd15", "base_model": None, "epochs": None, "overrides": [],
                "seed": None, "gpu": "rtx4090", "budget": None, "backend": "builtin"},
    )  # fmt: skip
    lora = run_dir / "output" / f"{name}.safetensors"
    lora.parent.mkdir()
    lora.write_bytes(b"x")
    for stage in STAGES:
        m.start(stage)
        m.finish(
            stage, outputs={"lora": str(lora), "epoch": 1, "reason": "r"} if stage == "pick" else {}
        )
    return run_dir


@pytest.fixture
def child_env(subprocess_env, monkeypatch, tmp_path):
    for key in ("PYTHONPATH", "HF_HOME", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(key, subprocess_env[key])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return bin_dir


def test_classify(tmp_path):
    run = finished_run(tmp_path, "a")
    assert classify(run).kind == RUN_DIR
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "training_config.toml").write_text("")
    item = classify(cfg_dir)
    assert item.kind == CONFIG and item.run_dir == cfg_dir.resolve()
    other = tmp_path / "style.toml"
    other.write_text("")
    assert classify(other).run_dir == (tmp_path / "style").resolve()
    with pytest.raises(UsageError):
        classify(tmp_path / "missing")
    with pytest.raises(UsageError):
        classify(tmp_path / "images_a")


def test_failure_does_not_stop_the_rest(child_env, tmp_path):
    good1 = finished_run(tmp_path, "one")
    broken = finished_run(tmp_path, "broken")
    (broken / "kohyagen.json").write_text("{corrupt")
    good2 = finished_run(tmp_path, "two")
    lines = []
    result = run_queue(
        [good1, broken, tmp_path / "missing", good2],
        sequential=True,
        progress=lambda label, line: lines.append((label, line)),
    )
    statuses = [r.status for r in result.results]
    assert statuses == ["ok", "failed", "failed", "ok"]
    assert result.results[0].lora.endswith("one.safetensors")
    assert result.results[3].lora.endswith("two.safetensors")
    assert "unreadable run manifest" in result.results[1].message
    assert "not found" in result.results[2].message
    assert (good1 / "queue.log").is_file() and (broken / "queue.log").is_file()
    assert any(label == "two" for label, _ in lines)


def test_cli_summary_and_exit_code(child_env, tmp_path):
    good = finished_run(tmp_path, "one")
    result = CliRunner().invoke(main, ["queue", str(good), str(tmp_path / "nope"), "--sequential"])
    assert result.exit_code == 1, result.output
    assert "1 ok, 1 failed" in result.output
    ok = CliRunner().invoke(main, ["queue", str(good), "--sequential", "--json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["failed"] == 0 and data["results"][0]["status"] == "ok"


def test_one_worker_per_free_gpu(child_env, tmp_path):
    fake_nvidia_smi(
        child_env,
        "0, NVIDIA GeForce RTX 4090, 24564, 100, 0\n"
        "1, NVIDIA GeForce RTX 4090, 24564, 20000, 99\n"
        "2, NVIDIA GeForce RTX 4090, 24564, 0, 0\n",
    )
    assert worker_gpus(None, sequential=False) == ["0", "2"]
    assert worker_gpus(None, sequential=True) == [None]
    runs = [finished_run(tmp_path, f"r{i}") for i in range(4)]
    result = run_queue(runs)
    assert result.gpus == ("0", "2")
    assert all(r.status == "ok" for r in result.results)
    used = {r.gpu for r in result.results}
    assert used <= {"0", "2"}
    for r in result.results:
        log = (tmp_path / r.run_dir).joinpath("queue.log").read_text()
        assert f"CUDA_VISIBLE_DEVICES={r.gpu}" in log


def test_explicit_gpus(child_env):
    assert worker_gpus(["1", "3", "1"], sequential=False) == ["1", "3"]
    assert worker_gpus(["1", "3"], sequential=True) == ["1"]


def test_config_item_failure_is_reported_and_the_rest_runs(child_env, tmp_path):
    cfg_dir = tmp_path / "style"
    cfg_dir.mkdir()
    missing = tmp_path / "nowhere" / "dataset_config.toml"
    (cfg_dir / "training_config.toml").write_text(
        "# kohyagen-script: train_network.py\n[model]\n"
        'pretrained_model_name_or_path = "x"\n'
        f'dataset_config = "{missing}"\n'
    )
    good = finished_run(tmp_path, "one")
    result = run_queue([cfg_dir, good], sequential=True)
    assert [r.status for r in result.results] == ["failed", "ok"]
    assert "dataset config not found" in result.results[0].message
    assert (cfg_dir / "queue.log").is_file()
