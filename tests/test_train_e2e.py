"""`kohyagen train` end to end against a fake sd-scripts checkout written by the tests."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest
from click.testing import CliRunner
from train_fixtures import fake_env, make_checkout, write_configs

from kohyagen.cli import main
from kohyagen.launch import train as launch

OVERFIT = "0.30,0.20,0.15,0.22,0.28"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("FAKE_KOHYA_"):
            monkeypatch.delenv(key)
    monkeypatch.delenv("KOHYA_SD_SCRIPTS", raising=False)


def test_oom_retry_then_report_and_pick(tmp_path, monkeypatch):
    checkout = make_checkout(tmp_path)
    config, _ = write_configs(tmp_path, batch_size=4, epochs=5)
    record = tmp_path / "accelerate.jsonl"
    monkeypatch.chdir(tmp_path)
    for key, value in fake_env(losses=OVERFIT, oom_above_batch=2).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FAKE_ACCELERATE_RECORD", str(record))
    result = CliRunner().invoke(
        main, ["train", str(config), "--sd-scripts", str(checkout), "--price", "0.69", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    run = tmp_path / "runs" / "mylora"
    assert out["status"] == "succeeded" and out["run_dir"] == str(run)
    attempts = out["attempts"]
    assert [a["diagnosis"]["code"] if a["diagnosis"] else None for a in attempts] == [
        "out-of-memory", "out-of-memory", None,
    ]  # fmt: skip
    assert [c["key"] for c in attempts[1]["changes"]] == ["gradient_checkpointing"]
    assert {c["key"]: c["new"] for c in attempts[2]["changes"]} == {
        "batch_size": 2, "gradient_accumulation_steps": 2,
    }  # fmt: skip
    # each attempt's configs are kept; the run folder holds the ones that worked
    for n in (1, 2, 3):
        assert (run / "attempts" / str(n) / "training_config.toml").is_file()
    assert "batch_size = 2" in (run / "dataset_config.toml").read_text()
    assert "gradient_checkpointing = true" in (run / "training_config.toml").read_text()
    assert "batch_size = 4" in (tmp_path / "dataset_config.toml").read_text()  # source untouched
    # the launcher really got accelerate's options, three times
    launches = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(launches) == 3
    assert launches[0][:8] == [
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    for name in ("train.log", "summary.json", "summary.md", "loss.png", "train.json"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == {"done": 20, "total": 20}
    assert [round(r["loss"], 3) for r in summary["loss_per_epoch"]] == [0.3, 0.2, 0.15, 0.22, 0.28]
    assert summary["cost"] is not None and summary["attempts"] == 3
    assert [c["epoch"] for c in summary["checkpoints"]] == [1, 2, 3, 4, 5]
    # the failed attempts' event files do not leak into the report (they logged 99.0)
    from kohyagen.report.run_folder import load_run

    assert len(summary["sources"]["events"]) == 1
    assert 99.0 not in [v for _s, v in load_run(run).current_loss]
    state = json.loads((run / "train.json").read_text())
    assert state["status"] == "succeeded" and state["price_per_hour"] == 0.69
    assert [len(a["event_files"]) for a in state["attempts"]] == [1, 1, 1]
    assert summary["sources"]["events"] == state["attempts"][-1]["event_files"]

    picked = CliRunner().invoke(main, ["pick", str(run), "--json"])
    assert picked.exit_code == 0, picked.output
    choice = json.loads(picked.output)
    assert choice["path"].endswith("mylora-000003.safetensors")
    assert choice["verdict"] == "overfitting" and "overfitting" in choice["reason"]
    best = tmp_path / "out" / "output" / "mylora-best.safetensors"
    assert (
        best.is_file()
        and best.read_bytes() == (best.parent / "mylora-000003.safetensors").read_bytes()
    )
    assert len(list(best.parent.glob("mylora*.safetensors"))) == 6  # nothing deleted

    report = CliRunner().invoke(main, ["report", str(run)])
    assert report.exit_code == 0 and "mylora-000003.safetensors" in report.output


def test_no_retry_fails_with_exit_3(tmp_path, monkeypatch):
    checkout = make_checkout(tmp_path)
    config, _ = write_configs(tmp_path, batch_size=4, epochs=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_KOHYA_OOM_ABOVE_BATCH", "1")
    result = CliRunner().invoke(
        main, ["train", str(config), "--sd-scripts", str(checkout), "--no-retry"]
    )
    assert result.exit_code == 3, result.output
    assert "ran out of memory" in result.output
    state = json.loads((tmp_path / "runs" / "mylora" / "train.json").read_text())
    assert state["status"] == "failed" and len(state["attempts"]) == 1
    assert (tmp_path / "runs" / "mylora" / "summary.json").is_file()


def test_no_data_found_with_exit_zero_is_a_failure(tmp_path, monkeypatch):
    checkout = make_checkout(tmp_path)
    config, _ = write_configs(tmp_path, epochs=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_KOHYA_MODE", "nodata")
    result = CliRunner().invoke(main, ["train", str(config), "--sd-scripts", str(checkout)])
    assert result.exit_code == 3, result.output
    assert "found no training images" in result.output
    state = json.loads((tmp_path / "runs" / "mylora" / "train.json").read_text())
    assert state["attempts"][0]["exit_code"] == 0 and state["failure"]["code"] == "no-data"


def test_nan_loss_stops_the_run_early(tmp_path):
    checkout = make_checkout(tmp_path)
    config, _ = write_configs(tmp_path, epochs=50)
    env = fake_env(mode="nan", nan_step=3, steps=20, step_sleep=0.02)  # 1000 steps unless stopped
    result = launch.train(config, sd_scripts=checkout, cwd=tmp_path, env=env)
    assert result.status == "failed" and result.failure.code == "nan-loss"
    attempt = result.attempts[-1]
    assert attempt.stop_reason == "nan-loss" and len(result.attempts) == 1
    assert result.summary["steps"]["done"] < 100

    def no_nan(constant):
        raise ValueError(f"summary.json holds {constant}")

    summary = json.loads((result.run_dir / "summary.json").read_text(), parse_constant=no_nan)
    assert summary["ended_by"] == "nan-loss" and summary["final_loss"] is None
    with pytest.raises(Exception) as err:
        result.raise_for_status()
    assert getattr(err.value, "exit_code", None) == 3


def test_ctrl_c_stops_the_trainer_and_still_reports(tmp_path):
    checkout = make_checkout(tmp_path)
    config, _ = write_configs(tmp_path, epochs=50)
    env = fake_env(steps=20, step_sleep=0.02, losses="0.3")
    sent = []

    def on_progress(p):
        if p.step >= 3 and not sent:
            sent.append(p.step)
            os.kill(os.getpid(), signal.SIGINT)  # what a terminal Ctrl-C delivers

    result = launch.train(
        config, sd_scripts=checkout, cwd=tmp_path, env=env, on_progress=on_progress
    )
    assert sent and result.status == "interrupted"
    assert result.failure.code == "interrupted"
    assert result.attempts[-1].stop_reason == "interrupted"
    assert result.summary["status"] == "interrupted"
    assert 3 <= result.summary["steps"]["done"] < 1000
    assert (result.run_dir / "summary.md").is_file()


def test_validation_loss_decides_when_logged(tmp_path):
    checkout = make_checkout(tmp_path)
    config, _ = write_configs(tmp_path, epochs=3)
    env = fake_env(losses="0.3,0.2,0.1", val_losses="0.5,0.4,0.45")
    result = launch.train(config, sd_scripts=checkout, cwd=tmp_path, env=env)
    assert result.status == "succeeded", result.failure
    from kohyagen.report.pick import pick

    choice = pick(result.run_dir)
    assert choice.by == "val" and choice.path.name == "mylora-000002.safetensors"
    assert [r["loss"] for r in result.summary["validation_loss_per_epoch"]] == pytest.approx(
        [0.5, 0.4, 0.45]
    )


def test_real_accelerate_launches_the_fake_script(tmp_path, subprocess_env, monkeypatch):
    """The argv works with the real `python -m accelerate.commands.launch` (no config file)."""
    pytest.importorskip("accelerate")
    checkout = make_checkout(tmp_path, venv=False)
    config, _ = write_configs(tmp_path, epochs=2, logging=False)
    monkeypatch.setenv("HF_HOME", subprocess_env["HF_HOME"])
    result = launch.train(
        config, sd_scripts=checkout, cwd=tmp_path, python=sys.executable,
        env={"ACCELERATE_CONFIG_FILE": str(tmp_path / "no-accelerate-config.yaml"), **fake_env(losses="0.3,0.2")},
    )  # fmt: skip
    log = (result.run_dir / "train.log").read_text(encoding="utf-8")
    assert result.status == "succeeded", log[-2000:]
    assert "saving checkpoint" in log


def test_a_failing_report_does_not_hide_the_result(tmp_path, monkeypatch):
    import kohyagen.report.summary

    def broken(run_dir):
        raise OSError("disk trouble")

    monkeypatch.setattr(kohyagen.report.summary, "write_report", broken)
    checkout = make_checkout(tmp_path)
    config, _ = write_configs(tmp_path, epochs=2)
    result = launch.train(config, sd_scripts=checkout, cwd=tmp_path, env=fake_env(mode="nodata"))
    assert result.status == "failed" and result.failure.code == "no-data"
    assert result.report_error == "OSError: disk trouble" and result.summary is None


def test_a_second_run_does_not_overwrite_checkpoints_silently(tmp_path, monkeypatch):
    checkout = make_checkout(tmp_path)
    config, _ = write_configs(tmp_path, epochs=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_KOHYA_LOSSES", "0.3,0.2")
    first = CliRunner().invoke(main, ["train", str(config), "--sd-scripts", str(checkout)])
    assert first.exit_code == 0, first.output
    assert CliRunner().invoke(main, ["pick", "runs/mylora"]).exit_code == 0
    out = tmp_path / "out" / "output"
    assert (out / "mylora-best.safetensors").exists()
    again = CliRunner().invoke(main, ["train", str(config), "--sd-scripts", str(checkout)])
    assert again.exit_code == 1
    assert "already holds 3 checkpoint(s)" in again.output and "--overwrite" in again.output
    assert not (tmp_path / "runs" / "mylora-2").exists()
    forced = CliRunner().invoke(
        main, ["train", str(config), "--sd-scripts", str(checkout), "--overwrite"]
    )
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "runs" / "mylora-2" / "summary.json").is_file()
    assert not (out / "mylora-best.safetensors").exists()  # the stale choice is gone


def test_disk_full_while_training_is_recorded_in_train_json(tmp_path, monkeypatch):
    """Issue 15 item 3: an OSError escaping the attempts loop (here ENOSPC while the
    trainer's output is written to train.log) ends the run as failed, not "running"."""
    import errno

    checkout = make_checkout(tmp_path)
    config, _ = write_configs(tmp_path, epochs=2)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "mylora"

    def disk_full(*_a, log_path, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", str(log_path))

    monkeypatch.setattr("kohyagen.launch.session.run_streaming", disk_full)
    result = CliRunner().invoke(main, ["train", str(config), "--sd-scripts", str(checkout)])
    assert result.exit_code == 3, result.output
    assert "the disk is full" in result.output and "free space" in result.output
    assert str(run / "train.log") in result.output
    state = json.loads((run / "train.json").read_text())
    assert state["status"] == "failed" and state["ended_at"] >= state["started_at"]
    assert state["failure"]["code"] == "ENOSPC"
    assert "disk is full" in state["failure"]["cause"]
    assert str(run / "train.log") in state["failure"]["cause"]
    assert "free space" in state["failure"]["fix"]
    assert not any(a.get("running") for a in state["attempts"])
