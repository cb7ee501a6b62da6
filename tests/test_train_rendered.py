"""`kohyagen train` on configs rendered by `kohyagen config`, with the fake sd-scripts."""

from __future__ import annotations

import json

import pytest
from conftest import make_image
from train_fixtures import fake_env, make_checkout

from kohyagen.config.render import render_configs, write_configs
from kohyagen.launch.train import train
from kohyagen.report.pick import pick


@pytest.mark.parametrize(
    ("model", "script"), [("sd15", "train_network.py"), ("sdxl", "sdxl_train_network.py")]
)
def test_rendered_configs_train_report_and_pick(tmp_path, monkeypatch, model, script):
    for i in range(4):
        make_image(tmp_path / "data" / "5_sks" / f"{i}.png", size=(96, 64))
        (tmp_path / "data" / "5_sks" / f"{i}.txt").write_text("sks, photo\n")
    (tmp_path / "base.safetensors").write_bytes(b"\0" * 8)
    run_dir = tmp_path / "runs" / "sks"
    rendered = render_configs(
        tmp_path / "data", model=model, gpu="rtx4090", out_dir=run_dir, name="sks",
        base_model=str(tmp_path / "base.safetensors"), epochs=4, cwd=tmp_path,
    )  # fmt: skip
    write_configs(rendered)
    checkout = make_checkout(tmp_path)
    record = tmp_path / "launch.jsonl"
    monkeypatch.setenv("FAKE_ACCELERATE_RECORD", str(record))
    result = train(
        rendered.training_path, sd_scripts=checkout, run_dir=run_dir, cwd=tmp_path,
        env=fake_env(losses="0.3,0.25,0.2,0.15", steps=2),
    )  # fmt: skip
    assert result.status == "succeeded", result.failure
    launched = json.loads(record.read_text().splitlines()[0])
    assert launched[launched.index("--dynamo_backend") + 2].endswith(script)
    mixed = launched[launched.index("--mixed_precision") + 1]
    assert mixed == rendered.training.get("mixed_precision", "no")
    summary = result.summary
    assert summary["epochs"] == {"done": 4, "total": 4}
    assert [c["epoch"] for c in summary["checkpoints"]] == [1, 2, 3, 4]
    assert summary["sources"]["events"], "rendered configs turn TensorBoard on"
    choice = pick(run_dir)
    assert choice.verdict == "falling" and choice.path.name == "sks.safetensors"
    assert choice.best_path == run_dir / "output" / "sks-best.safetensors"
