"""`kohyagen run` end to end: real stages, a tiny random model, the builtin trainer on CPU.

These need every piece of the pipeline (dataset, render, launch, report, checkpoints, the
builtin trainer and kohyagen.run.tiny) and the [train] extra.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from kohyagen.cli import main
from kohyagen.run.demo import DEMO_OVERRIDES, make_demo_dataset
from kohyagen.run.manifest import DONE, FAILED, PENDING, STAGES, Manifest

pytestmark = [pytest.mark.slow, pytest.mark.train]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from kohyagen.run.tiny import make_tiny_pipeline

    return make_tiny_pipeline(tmp_path_factory.mktemp("model") / "tiny-sd15", kind="sd15")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, subprocess_env):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HOME", subprocess_env["HF_HOME"])
    monkeypatch.setenv("PYTHONPATH", subprocess_env["PYTHONPATH"])
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")  # no nvidia-smi: a CPU box


def run_args(images: Path, run_dir: Path, model: Path, *extra: str) -> list[str]:
    args = ["run", str(images), "--name", "shapes", "--trigger", "kgdemo", "--model", "sd15",
            "--base-model", str(model), "--backend", "builtin", "--run-dir", str(run_dir),
            "--yes", "--seed", "1"]  # fmt: skip
    for override in DEMO_OVERRIDES:
        args += ["--set", override]
    return [*args, *extra]


def stage_times(run_dir: Path) -> dict[str, str]:
    m = Manifest.load(run_dir)
    return {s: m.stage(s).get("finished") for s in STAGES if m.stage(s).get("finished")}


def test_budget_below_estimate_stops_before_training(tmp_path, tiny_model):
    images = tmp_path / "images"
    make_demo_dataset(images, count=4)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        main, run_args(images, run_dir, tiny_model, "--gpu", "rtx4090", "--budget", "0.001")
    )
    assert result.exit_code == 1, result.output
    assert "budget" in result.output and "nothing was trained" in result.output
    m = Manifest.load(run_dir)
    assert [m.status(s) for s in STAGES[:4]] == [DONE, DONE, m.status("tag"), DONE]
    assert m.status("estimate") == FAILED and m.status("train") == PENDING
    assert not (run_dir / "train.log").exists()
    assert not list(run_dir.glob("output/*.safetensors"))
    assert m.data["estimate"]["budget_cost"] > 0.001
    assert m.data["configs"]["gpu"] == "rtx4090"


def test_demo_interrupted_then_run_continues_and_is_not_trained_twice(tmp_path, subprocess_env):
    """Ctrl-C during the demo's training (after epoch 1 is saved); `kohyagen run` with the
    same inputs continues at the train stage from the saved state, without redoing the
    earlier stages or epoch 1, and ends with a chosen LoRA and its report; `kohyagen demo`
    afterwards finds the run finished and trains nothing."""
    demo_dir = tmp_path / "demo"
    run_dir = demo_dir / "run"
    env = dict(subprocess_env)
    env["PATH"] = os.environ["PATH"]
    env["XDG_CONFIG_HOME"] = os.environ["XDG_CONFIG_HOME"]
    # Ctrl-C reaches the whole foreground process group: kohyagen and the trainer.
    proc = subprocess.Popen(
        [sys.executable, "-m", "kohyagen", "demo", "--dir", str(demo_dir), "--epochs", "3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    first_state = run_dir / "output" / "demo-000001-state" / "train_state.json"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if first_state.is_file():  # epoch 1 is saved, with its training state
                break
            if proc.poll() is not None:
                pytest.fail("demo ended before training started:\n" + proc.stdout.read())
            time.sleep(0.1)
        else:
            pytest.fail("training did not start in time")
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, output
    m = Manifest.load(run_dir)
    assert m.status("train") == FAILED, output
    epoch1 = run_dir / "output" / "demo-000001.safetensors"
    epoch1_mtime = epoch1.stat().st_mtime_ns
    assert all(m.status(s) in ("done", "skipped") for s in STAGES[: STAGES.index("train")])
    before = stage_times(run_dir)
    subset = next((run_dir / "training_data").iterdir())
    copies = {p.name: p.stat().st_mtime_ns for p in subset.iterdir()}
    configs = {p: p.stat().st_mtime_ns for p in run_dir.glob("*_config.toml")}

    args = ["run", str(demo_dir / "images"), "--name", "demo", "--trigger", "kgdemo",
            "--base-model", str(demo_dir / "tiny-sd15"), "--backend", "builtin", "--gpu", "cpu",
            "--run-dir", str(run_dir), "--epochs", "3", "--seed", "0", "--yes", "--json"]  # fmt: skip
    for override in DEMO_OVERRIDES:
        args += ["--set", override]
    result = CliRunner().invoke(main, args)
    if result.exit_code != 0:
        log = (run_dir / "train.log").read_text(errors="replace")[-3000:]
        pytest.fail(f"{result.output}\n{log}")
    data = json.loads(result.stdout)
    assert data["resumed_from"] == "train"
    after = stage_times(run_dir)
    for stage in STAGES[: STAGES.index("train")]:
        assert after[stage] == before[stage], stage
    assert {p.name: p.stat().st_mtime_ns for p in subset.iterdir()} == copies
    m = Manifest.load(run_dir)
    assert m.stage("train")["attempts"] == 2
    # training went on from the saved state: epoch 1 was not trained (nor written) again
    assert m.outputs("train")["resumed_from_state"].endswith("demo-000001-state")
    assert epoch1.stat().st_mtime_ns == epoch1_mtime
    assert (run_dir / "output" / "demo.safetensors").is_file()
    # the states were only there for a resume: gone once training succeeded
    assert not list((run_dir / "output").glob("*-state"))
    assert m.outputs("train")["states_removed"]
    assert all(m.status(s) == DONE for s in STAGES if s != "tag")
    lora = Path(data["lora"])
    assert lora.is_file() and lora.suffix == ".safetensors"
    assert (run_dir / "summary.json").is_file() and (run_dir / "loss.png").is_file()
    assert json.loads((run_dir / "summary.json").read_text())
    assert m.data["versions"]["kohyagen"] and m.data["seed"] == 0
    assert m.data["dataset"]["source"]["digest"]
    assert configs  # the configs the train stage used are still there
    assert "<lora:" not in result.stdout  # --json prints JSON only

    log_size = (run_dir / "train.log").stat().st_size
    again = CliRunner().invoke(main, ["demo", "--dir", str(demo_dir), "--epochs", "3", "--json"])
    assert again.exit_code == 0, again.output
    final = json.loads(again.stdout)
    assert final["already_finished"] and final["lora"] == data["lora"]
    assert (run_dir / "train.log").stat().st_size == log_size
    # the demo ends with report.html showing samples per epoch and the preview grids
    page = Path(final["report_html"]).read_text()
    assert final["report_html"] == data["report_html"] == str(run_dir / "report.html")
    # (epoch 1's samples come after its checkpoint, and the Ctrl-C may have cut them off)
    for epoch in (2, 3):
        assert f"<h3>epoch {epoch}</h3>" in page
    assert page.count('src="output/sample/demo_e') >= 2 * 5  # five prompts an epoch
    grids = json.loads((run_dir / "preview" / "preview.json").read_text())["grids"]
    assert len(grids) == 5 + 3  # the prompts and the trigger variations
    # (rows: the checkpoints the report lists; after this resume it leaves out epoch 1)
    assert grids[0]["rows"][-2:] == ["epoch 2", "epoch 3 (picked)"]
    assert grids[0]["columns"] == ["no LoRA", "weight 0.5", "weight 1"]
    assert all(f'src="preview/{g["file"]}"' in page for g in grids)
