"""Reports and checkpoint choice: real kohya samples, planted curves, runs in progress."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner
from train_fixtures import make_run, write_checkpoint

from kohyagen.cli import main
from kohyagen.errors import KohyagenError, RunStateError
from kohyagen.report.checkpoints import list_checkpoints, read_trend
from kohyagen.report.pick import pick
from kohyagen.report.run_folder import load_run
from kohyagen.report.summary import write_report


def sample_run(tmp_path, shared_dir, run="run_B", events=True):
    """A run folder made from a real sd-scripts run (paths moved under tmp_path)."""
    src = shared_dir / "kohya" / "samples" / run
    out, logs = tmp_path / "output", tmp_path / "logs"
    folder = tmp_path / "run"
    folder.mkdir()
    config = (src / "training_config.toml").read_text()
    letter = run[-1]
    config = config.replace(f"/data/harness/runs/{letter}/output", str(out))
    config = config.replace(f"/data/harness/runs/{letter}/logs", str(logs))
    (folder / "training_config.toml").write_text(config)
    log = (src / "combined.log").read_bytes().decode("utf-8")
    (folder / "train.log").write_bytes(
        log.replace(f"/data/harness/runs/{letter}/output", str(out)).encode()
    )
    for meta in (src / "safetensors").glob("*.json"):
        data = json.loads(meta.read_text())
        write_checkpoint(
            out / data["file"], epoch=int(data["metadata"]["ss_epoch"]),
            step=int(data["metadata"]["ss_steps"]), size=1000,
        )  # fmt: skip
    if events:
        shutil.copytree(src / "tensorboard", logs)
    return folder


def test_report_from_real_run_with_events(tmp_path, shared_dir):
    run = sample_run(tmp_path, shared_dir)
    summary = write_report(run)
    assert summary["status"] == "succeeded" and summary["ended_by"] == "finished"
    assert summary["steps"] == {"done": 12, "total": 12}
    assert summary["epochs"] == {"done": 2, "total": 2}
    assert [round(r["loss"], 4) for r in summary["loss_per_epoch"]] == [1.102, 1.0408]
    assert [round(r["loss"], 4) for r in summary["validation_loss_per_epoch"]] == [1.1908, 1.1596]
    assert [(c["file"], c["epoch"], c["step"]) for c in summary["checkpoints"]] == [
        ("harness-000001.safetensors", 1, 6),
        ("harness.safetensors", 2, 12),
    ]
    assert summary["speed"]["seconds_per_step"] == pytest.approx(1.97)
    assert summary["recommended"]["file"] == "harness.safetensors"
    assert summary["recommended"]["by"] == "val"
    assert len(summary["sources"]["events"]) == 1
    for name in ("summary.json", "summary.md", "loss.png"):
        assert (run / name).stat().st_size > 0
    md = (run / "summary.md").read_text()
    assert "| 2 | 12 | 1.041 | 1.16 |" in md and "harness.safetensors" in md
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_from_train_log_alone(tmp_path, shared_dir):
    run = sample_run(tmp_path, shared_dir, "run_A", events=False)
    summary = write_report(run)
    assert summary["sources"]["events"] == []
    assert [r["loss"] for r in summary["loss_per_epoch"]] == [1.08, 1.05]
    assert summary["validation_loss_per_epoch"] == []
    assert summary["recommended"]["verdict"] == "falling"
    assert summary["recommended"]["file"] == "harness.safetensors"
    assert (run / "loss.png").exists()


def test_report_on_a_run_in_progress(tmp_path):
    run = make_run(tmp_path, [0.3, 0.25, 0.2, 0.18], finished=False)
    log = (run / "train.log").read_bytes().decode("utf-8")
    (run / "train.log").write_bytes(log[: log.index("| 14/16") + 20].encode())  # mid-redraw
    (run / "train.json").write_text(
        json.dumps({"status": "running", "pid": os.getpid(), "started_at": 1.0})
    )
    summary = write_report(run)
    assert summary["status"] == "running"
    assert summary["steps"]["total"] == 16 and 12 <= summary["steps"]["done"] < 16
    assert summary["epochs"] == {"done": 3, "total": 4}
    assert [c["epoch"] for c in summary["checkpoints"]] == [1, 2, 3]
    assert summary["duration_s"] > 0


def test_a_dead_running_run_reads_as_stopped(tmp_path):
    run = make_run(tmp_path, [0.3, 0.2])
    (run / "train.json").write_text(json.dumps({"status": "running", "pid": 2**22 + 4321}))
    assert write_report(run)["status"] == "stopped"


def test_samples_per_epoch_in_markdown(tmp_path):
    run = make_run(tmp_path, [0.3, 0.2])
    sample = tmp_path / "out" / "output" / "sample"
    sample.mkdir()
    for epoch in (1, 2):
        (sample / f"mylora_e{epoch:06d}_00_20261129110000.png").write_bytes(b"png")
    (sample / "mylora_000004_01_20261129110000.png").write_bytes(b"png")
    summary = write_report(run)
    assert set(summary["samples"]) == {"epoch 1", "epoch 2", "step 4"}
    md = (run / "summary.md").read_text()
    assert (
        "### epoch 1" in md and "../../out/output/sample/mylora_e000002_00_20261129110000.png" in md
    )


def test_report_errors(tmp_path):
    with pytest.raises(RunStateError):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no train.log" in result.output


@pytest.mark.parametrize(
    ("losses", "verdict", "epoch"),
    [
        ([0.30, 0.20, 0.15, 0.22, 0.28], "overfitting", 3),
        ([0.30, 0.25, 0.20, 0.16, 0.12], "falling", 5),
        ([0.30, 0.20, 0.15, 0.151, 0.150], "leveled", 5),
        ([0.150, 0.151, 0.1495, 0.150], "flat", 4),
    ],
)
def test_pick_reads_the_training_curve(tmp_path, losses, verdict, epoch):
    run = make_run(tmp_path, losses)
    choice = pick(run)
    assert choice.by == "train" and choice.verdict == verdict
    assert choice.epoch == epoch, choice.reason
    assert ("learning-rate-too-low" in choice.flags) == (verdict == "flat")
    assert choice.best_path.name == "mylora-best.safetensors"
    assert choice.best_path.read_bytes() == choice.path.read_bytes()
    assert os.stat(choice.best_path).st_ino == os.stat(choice.path).st_ino  # a hard link


def test_pick_cli_validation_and_prune(tmp_path):
    run = make_run(tmp_path, [0.3, 0.2, 0.15], val=[0.5, 0.42, 0.47])
    out = tmp_path / "out" / "output"
    result = CliRunner().invoke(main, ["pick", str(run)])
    assert result.exit_code == 0, result.output
    assert "mylora-000002.safetensors" in result.output and "validation loss" in result.output
    by_train = CliRunner().invoke(main, ["pick", str(run), "--by", "train", "--json"])
    assert json.loads(by_train.output)["path"].endswith("mylora.safetensors")
    assert (out / "mylora-best.safetensors").read_bytes() == (
        out / "mylora.safetensors"
    ).read_bytes()
    pruned = CliRunner().invoke(main, ["pick", str(run), "--prune", "--json"])
    data = json.loads(pruned.output)
    assert len(data["pruned"]) == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "mylora-000002.safetensors",
        "mylora-best.safetensors",
    ]


def test_pick_by_val_without_validation_is_an_error(tmp_path):
    run = make_run(tmp_path, [0.3, 0.2])
    result = CliRunner().invoke(main, ["pick", str(run), "--by", "val"])
    assert result.exit_code == 1 and "no validation loss" in result.output


def test_pick_without_checkpoints(tmp_path):
    run = make_run(tmp_path, [0.3, 0.2])
    for path in (tmp_path / "out" / "output").iterdir():
        path.unlink()
    with pytest.raises(KohyagenError, match="no checkpoints"):
        pick(run)


def test_checkpoint_names_and_metadata(tmp_path):
    out = tmp_path / "o"
    write_checkpoint(out / "x-000001.safetensors")
    write_checkpoint(out / "x-step00000006.safetensors")
    write_checkpoint(out / "x.safetensors", epoch=2, step=12)
    write_checkpoint(out / "x-best.safetensors")
    write_checkpoint(out / "x-v2.safetensors")
    (out / "x-000001-state").mkdir()
    found = list_checkpoints(out, "x", epoch_end_step={1: 5, 2: 12}, total_epochs=2, total_steps=12)
    assert [(c.name, c.kind, c.epoch, c.step) for c in found] == [
        ("x-000001.safetensors", "epoch", 1, 5),
        ("x-step00000006.safetensors", "step", 2, 6),
        ("x.safetensors", "final", 2, 12),
    ]


def test_trend_tolerance_uses_noise():
    losses = {1: 0.30, 2: 0.20, 3: 0.19, 4: 0.205}
    assert read_trend(losses)[0] == "overfitting"
    # with noisy steps a 0.015 rise is within noise
    assert read_trend(losses, noise=0.01)[0] == "leveled"
    assert read_trend({1: 0.3})[0] == "unknown"


def test_load_run_uses_only_the_last_attempts_output(tmp_path):
    run = make_run(tmp_path, [0.3, 0.2])
    text = (run / "train.log").read_bytes()
    junk = b"\rsteps:  50%|##| 1/2 [00:01<00:01,  1.00s/it, avr_loss=9.99]\nTraceback\n"
    (run / "train.log").write_bytes(junk + text)
    (run / "train.json").write_text(
        json.dumps(
            {"status": "succeeded", "attempts": [{"log_start": 0}, {"log_start": len(junk)}]}
        )
    )
    data = load_run(run)
    assert 9.99 not in data.avg_loss_step.values()
    assert data.train_loss_epoch == {1: 0.3, 2: 0.2}


def test_checkpoints_left_by_an_earlier_run_are_ignored(tmp_path):
    import time

    run = make_run(tmp_path, [0.3, 0.2, 0.25])
    out = tmp_path / "out" / "output"
    stale = write_checkpoint(out / "mylora-000007.safetensors", epoch=7, step=28)
    os.utime(stale, (1000, 1000))
    started = time.time() - 5
    (run / "train.json").write_text(
        json.dumps({"status": "succeeded", "attempts": [{"started_at": started, "log_start": 0}]})
    )
    names = [c.name for c in load_run(run).checkpoints]
    assert "mylora-000007.safetensors" not in names and len(names) == 3


def test_report_cli_json(tmp_path):
    run = make_run(tmp_path, [0.3, 0.2])
    result = CliRunner().invoke(main, ["report", str(run), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["steps"]["done"] == 8 and data["recommended"]["file"] == "mylora.safetensors"
    text = CliRunner().invoke(main, ["report", str(run)])
    assert "epoch 2: loss 0.2" in text.output and "best checkpoint" in text.output
    assert "[epoch-average loss 1: 0.3, 2: 0.2]" in text.output  # not eaten as rich markup


def test_progress_line():
    from kohyagen.cli.train_cmd import progress_line
    from kohyagen.launch.watch import Progress

    line = progress_line(Progress(2, 8, 16, 1, 2, 1.08, 1.83, 14.0, 3725.0, 0.71))
    assert line == (
        "attempt 2 · epoch 1/2 · step 8/16 (50%) · loss 1.08 · 1.83 s/step · ETA 0:14 · "
        "elapsed 1:02:05 · $0.71"
    )
    fast = progress_line(Progress(1, 0, None, 0, None, None, 0.25, None, 5.0, None))
    assert fast == "loading · 4 step/s · elapsed 0:05"


def test_report_from_events_alone(tmp_path, shared_dir):
    run = sample_run(tmp_path, shared_dir, "run_B")
    (run / "train.log").unlink()
    summary = write_report(run)
    assert [round(r["loss"], 4) for r in summary["loss_per_epoch"]] == [1.102, 1.0408]
    assert [r["step"] for r in summary["loss_per_epoch"]] == [6, 12]
    assert [(c["epoch"], c["step"]) for c in summary["checkpoints"]] == [(1, 6), (2, 12)]
    assert summary["recommended"]["file"] == "harness.safetensors"
