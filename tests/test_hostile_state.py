"""Hostile corpus, item 5: state that tells the truth.

A finished run whose LoRA was deleted, Ctrl-C in a stage, hand-damaged manifests,
and --json for file names that are not UTF-8. Each asserts the exit code, the message,
no traceback and unchanged user files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from hostile_helpers import assert_known, hashes, invoke
from test_tag_helpers import solid

from kohyagen.run import stages
from kohyagen.run.manifest import Manifest
from tests.test_run_pipeline import FakeStages


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    for i in range(4):
        solid(folder / f"{i}.png", (60 * i, 0, 0))
        (folder / f"{i}.txt").write_text("sks, red\n")
    return folder


def run(images, tmp_path, *extra):
    return invoke(
        "run", images, "--name", "x", "--trigger", "sks", "--gpu", "rtx4090", "-y",
        "--run-dir", tmp_path / "run", *extra,
    )  # fmt: skip


def test_finished_run_without_its_lora_is_not_ready(monkeypatch, tmp_path, images):
    FakeStages(monkeypatch)
    assert_known(run(images, tmp_path), 0, "LoRA ready")
    shutil.rmtree(tmp_path / "run" / "output")
    result = run(images, tmp_path)
    assert_known(result, 1, "no longer there", "--restart")
    assert "LoRA ready" not in result.output
    assert_known(run(images, tmp_path, "--restart"), 0, "LoRA ready")


@pytest.mark.parametrize("stage", ["check", "prepare", "tag", "config", "train", "pick"])
def test_ctrl_c_in_a_stage_exits_130_and_is_recorded(monkeypatch, tmp_path, images, stage):
    FakeStages(monkeypatch)
    before = hashes(images)

    def interrupted(ctx):
        raise KeyboardInterrupt

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, stage, interrupted)
    result = run(images, tmp_path)
    assert result.exit_code == 130 and "interrupted" in result.output
    assert "Traceback" not in result.output
    manifest = Manifest.load(tmp_path / "run")
    assert manifest.stage(stage).get("error") == "interrupted"
    assert hashes(images) == before


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: {**d, "stages": []},
        lambda d: {**d, "stages": {**d["stages"], "train": "done"}},
        lambda d: {**d, "inputs": None},
        "truncated",
    ],
)
def test_damaged_manifest_has_a_message_and_restart_works(monkeypatch, tmp_path, images, damage):
    FakeStages(monkeypatch)
    assert_known(run(images, tmp_path), 0)
    path = tmp_path / "run" / "kohyagen.json"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.write_text(json.dumps(damage(json.loads(path.read_text()))))
    before = hashes(images)
    assert_known(run(images, tmp_path), 1, "manifest", "--restart")
    assert_known(run(images, tmp_path, "--restart"), 0, "LoRA ready")
    assert hashes(images) == before


def test_json_is_valid_utf8_for_any_file_name(tmp_path, subprocess_env):
    folder = tmp_path / "images"
    solid(folder / "ok.png", (1, 2, 3))
    solid(folder / os.fsdecode(b"\xff\xfe.png"), (3, 2, 1))
    out = subprocess.run(
        [sys.executable, "-m", "kohyagen", "dataset", "check", str(folder), "--json"],
        capture_output=True, env=subprocess_env, timeout=120,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    data = json.loads(out.stdout.decode("utf-8"))  # strict: invalid UTF-8 raises
    names = json.dumps(data)
    assert "\\udcff\\udcfe.png" in names


def _epoch_events(folder, epochs, wall):
    from kohyagen.report.event_writer import EventFileWriter

    writer = EventFileWriter(folder, wall_time=wall)
    for epoch, loss in epochs:
        writer.add_scalar("loss/epoch_average", loss, epoch, wall_time=wall + epoch)
    return str(writer.path)


def test_report_and_pick_read_every_session_of_a_resumed_training(tmp_path):
    """Killed after epoch 2, resumed for epochs 3-4: the early epochs still count."""
    import time

    from train_fixtures import write_checkpoint

    run = tmp_path / "run"
    out, logs = run / "output", run / "logs"
    run.mkdir()
    (run / "training_config.toml").write_text(
        f'output_dir = "{out}"\nlogging_dir = "{logs}"\noutput_name = "lora"\n'
        "max_train_epochs = 4\n"
    )
    now = time.time()
    t0, t1 = now - 1000, now - 500
    ev1 = _epoch_events(logs / "s1", [(1, 0.30), (2, 0.10)], t0)
    ev2 = _epoch_events(logs / "s2", [(3, 0.20), (4, 0.25)], t1)
    for epoch, when in ((1, t0 + 100), (2, t0 + 200), (3, t1 + 100), (4, t1 + 200)):
        name = "lora.safetensors" if epoch == 4 else f"lora-{epoch:06d}.safetensors"
        path = write_checkpoint(out / name, epoch=epoch, step=4 * epoch)
        os.utime(path, (when, when))
    state = {
        "run_dir": str(run.resolve()), "status": "succeeded", "started_at": t1, "ended_at": now,
        "attempts": [{"number": 1, "started_at": t1, "event_files": [ev2]}],
        "earlier_sessions": [{"started_at": t0, "ended_at": t0 + 250, "event_files": [ev1]}],
    }  # fmt: skip
    (run / "train.json").write_text(json.dumps(state))
    report = invoke("report", run, "--json")
    assert_known(report, 0)
    summary = json.loads(report.stdout)
    assert [row["epoch"] for row in summary["loss_per_epoch"]] == [1, 2, 3, 4]
    assert len(summary["checkpoints"]) == 4
    picked = invoke("pick", run, "--by", "train", "--json")
    assert_known(picked, 0)
    assert json.loads(picked.stdout)["epoch"] in (1, 2, 3, 4)


def test_a_resumed_session_records_the_sessions_before_it(tmp_path, monkeypatch):
    from train_fixtures import fake_env, make_checkout, write_configs

    from kohyagen.launch.train import train

    for key in [k for k in os.environ if k.startswith("FAKE_KOHYA_")]:
        monkeypatch.delenv(key)
    checkout = make_checkout(tmp_path)
    config, _ = write_configs(tmp_path, epochs=2)
    monkeypatch.chdir(tmp_path)
    for key, value in fake_env(losses="0.3,0.2").items():
        monkeypatch.setenv(key, value)
    first = train(config, sd_scripts=checkout, run_dir=tmp_path / "run")
    before = json.loads((tmp_path / "run" / "train.json").read_text())
    train(
        config, sd_scripts=checkout, run_dir=tmp_path / "run", overwrite=True,
        extra_args=["--resume", str(tmp_path / "state")],
    )  # fmt: skip
    after = json.loads((tmp_path / "run" / "train.json").read_text())
    assert first.status == "succeeded"
    [session] = after["earlier_sessions"]
    assert session["started_at"] == before["started_at"] and session["log"] == "train-1.log"
    assert session["event_files"] == before["attempts"][-1]["event_files"]


@pytest.mark.parametrize("kind", ["list", "fifo"])
def test_a_train_json_of_another_shape_or_a_fifo_is_no_state(tmp_path, kind):
    from hostile_helpers import deadline
    from train_fixtures import make_run

    from kohyagen.launch.run_folder import choose_run_dir

    run = make_run(tmp_path, [0.3, 0.2])
    state = run / "train.json"
    state.unlink(missing_ok=True)
    if kind == "list":
        state.write_text("[1, 2]")
    else:
        os.mkfifo(state)
    with deadline(10):
        assert_known(invoke("report", run, "--json"), 0)
        # a training started in that folder reads it too, before anything else
        assert choose_run_dir("mylora", run, cwd=tmp_path) == run
