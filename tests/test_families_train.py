"""`kohyagen train` for the DiT families against a fake sd-scripts checkout that has each
family's script; the out-of-memory ladder's family levers; the builtin backend's refusal;
report and pick on a FLUX run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from train_fixtures import make_checkout

from kohyagen.cli import main
from kohyagen.config import presets
from kohyagen.config.render import render_configs, write_configs
from kohyagen.errors import LintFailed, SdScriptsNotFound, UsageError
from kohyagen.launch import train as launch
from tests.family_fixtures import family_files
from tests.test_config_render import make_train_dir

DIT = [m.name for m in presets.list_models() if m.is_dit]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("FAKE_KOHYA_"):
            monkeypatch.delenv(key)
    monkeypatch.delenv("KOHYA_SD_SCRIPTS", raising=False)


def _configs(tmp_path: Path, family: str, gpu: str = "rtx4090", **kw) -> Path:
    data = make_train_dir(tmp_path / "ds", folders=(("2_sks", 4),))
    rendered = render_configs(
        data, model=family, gpu=gpu, out_dir=tmp_path / "cfg", name="fam", epochs=2,
        model_files=family_files(family, tmp_path / "models"), **kw,
    )  # fmt: skip
    write_configs(rendered)
    return rendered.training_path


@pytest.mark.parametrize("family", DIT)
def test_train_runs_the_familys_script(tmp_path, monkeypatch, family):
    checkout = make_checkout(tmp_path)
    config = _configs(tmp_path, family)
    record = tmp_path / "accelerate.jsonl"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_ACCELERATE_RECORD", str(record))
    result = launch.train(config, sd_scripts=checkout, cwd=tmp_path)
    assert result.status == "succeeded", result.failure
    script = presets.get_model(family).script
    launched = json.loads(record.read_text().splitlines()[0])
    assert launched[launched.index("--dynamo_backend") + 2] == str(checkout / script)
    assert result.summary["lora_format"]["script"] == script
    assert result.summary["lora_format"]["apps"] == presets.get_model(family).apps


def test_flux_oom_ladder_steps_through_its_levers(tmp_path, monkeypatch):
    checkout = make_checkout(tmp_path)
    config = _configs(tmp_path, "flux", gpu="a100-80", samples=True, trigger="sks")
    text = config.read_text()
    assert "fp8_base" not in text and "blocks_to_swap" not in text  # 16-bit fits 80 GB
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_KOHYA_OOM_UNLESS_SWAP", "9")
    result = CliRunner().invoke(main, ["train", str(config), "--sd-scripts", str(checkout),
                                       "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    changes = [[(c["key"], c["new"]) for c in a["changes"]] for a in out["attempts"][1:]]
    # checkpointing, fp8, the batch halved (accumulation doubled), then swapped blocks
    assert [c[0] for c in changes] == [
        ("gradient_checkpointing", True), ("fp8_base", True), ("train_batch_size", 2),
        ("train_batch_size", 1), ("blocks_to_swap", 8), ("blocks_to_swap", 16),
    ]  # fmt: skip
    run = tmp_path / "runs" / "fam"
    final = (run / "training_config.toml").read_text()
    assert "fp8_base = true" in final and "blocks_to_swap = 16" in final
    summary = json.loads((run / "summary.json").read_text())
    assert summary["grad_norm"]["tag"] == "norm/avg_grad_norm"
    assert summary["grad_norm"]["last"] == pytest.approx(0.5 / summary["steps"]["done"], rel=1e-3)
    assert set(summary["samples"]) == {"epoch 1", "epoch 2"}
    md = (run / "summary.md").read_text()
    assert "ComfyUI" in md and "norm/avg_grad_norm" in md


def test_a_missing_model_file_is_refused_before_launch(tmp_path, monkeypatch):
    checkout = make_checkout(tmp_path)
    config = _configs(tmp_path, "flux")
    t5 = Path(config.read_text().split('t5xxl = "')[1].split('"')[0])
    t5.unlink()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LintFailed) as exc:
        launch.train(config, sd_scripts=checkout, cwd=tmp_path)
    assert [(f.code, f.key) for f in exc.value.findings] == [("model-file", "t5xxl")]
    assert "does not exist" in exc.value.findings[0].message
    assert not (tmp_path / "runs").exists()  # nothing launched
    # kohya itself (the fake) would only find out after scanning the dataset
    proc = subprocess.run(
        [sys.executable, str(checkout / "flux_train_network.py"), "--config_file", str(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and f'No such file or directory: "{t5}"' in proc.stderr


def test_builtin_backend_refuses_dit_families(tmp_path, monkeypatch):
    config = _configs(tmp_path, "sd3")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"sd3_train_network\.py") as exc:
        launch.train(config, backend="builtin", cwd=tmp_path, dry_run=True)
    assert "--backend kohya" in exc.value.hint
    monkeypatch.setattr("kohyagen.launch.preflight.find_sd_scripts", _no_checkout)
    with pytest.raises(SdScriptsNotFound, match=r"builtin trainer trains SD1\.x/2\.x/SDXL only"):
        launch.train(config, cwd=tmp_path, dry_run=True)
    result = CliRunner().invoke(main, ["train", str(config), "--backend", "builtin"])
    assert result.exit_code == 2 and "sd3_train_network.py" in result.output


def _no_checkout(*_args, **_kwargs):
    raise SdScriptsNotFound("no checkout")


def test_pick_leaves_out_checkpoints_after_the_gradient_norm_went_nan(tmp_path, monkeypatch):
    checkout = make_checkout(tmp_path)
    config = _configs(tmp_path, "flux")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_KOHYA_GRAD_NAN_STEP", "6")  # epoch 2 of 2 (4 steps each)
    result = launch.train(config, sd_scripts=checkout, cwd=tmp_path)
    assert result.status == "succeeded"
    assert result.summary["grad_norm"]["not_finite_from_step"] == 6
    picked = CliRunner().invoke(main, ["pick", str(result.run_dir), "--json"])
    assert picked.exit_code == 0, picked.output
    choice = json.loads(picked.output)
    assert choice["path"].endswith("fam-000001.safetensors")
    assert "gradient-norm-not-finite" in choice["flags"] and "step 6" in choice["reason"]


def test_dataset_check_holds_the_1024_px_families_to_1024(tmp_path):
    from kohyagen.dataset.check import check_dataset

    data = make_train_dir(tmp_path, folders=(("2_sks", 2),))  # 32 px images
    for model in ("flux", "sd3", "anima"):
        small = [f for f in check_dataset(data, model=model).findings if f.code == "too-small"]
        assert small and "1024 px" in small[0].message
