"""Config copies for a run and the out-of-memory ladder."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit
from click.testing import CliRunner

from kohyagen.cli import main
from kohyagen.launch import attempts as cfg
from kohyagen.launch.diagnose import Diagnosis
from kohyagen.launch.outcome import TrainResult


def _doc(text: str):
    return tomlkit.parse(text)


def test_ladder_with_a_dataset_config():
    training = _doc(
        '# kohyagen-script: train_network.py\noptimizer_type = "AdamW"\n[extra]\nnetwork_dim = 4\n'
    )
    dataset = _doc("[general]\nbatch_size = 4\n[[datasets]]\nbatch_size = 8\nresolution = 512\n")
    steps = []
    while changes := cfg.shrink(training, dataset):
        steps.append([(c.key, c.new) for c in changes])
    assert steps == [
        [("gradient_checkpointing", True)],
        [("batch_size", 2), ("batch_size", 4), ("gradient_accumulation_steps", 2)],
        [("batch_size", 1), ("batch_size", 2), ("gradient_accumulation_steps", 4)],
        [("batch_size", 1), ("gradient_accumulation_steps", 8)],
        [("cache_latents", True)],
        [("optimizer_type", "AdamW8bit")],
    ]
    text = tomlkit.dumps(training)
    assert text.startswith("# kohyagen-script: train_network.py\n")  # the marker survives
    assert tomlkit.parse(text)["gradient_checkpointing"] is True  # top level, not in [extra]
    assert dataset["general"]["batch_size"] == 1 and dataset["datasets"][0]["batch_size"] == 1
    assert cfg.effective_batch_size(training, dataset) == 1


def test_ladder_without_a_dataset_config_and_with_augmentation():
    training = _doc(
        "gradient_checkpointing = true\ntrain_batch_size = 3\ncolor_aug = true\n"
        'optimizer_type = "Prodigy"\n'
    )
    assert {c.key: c.new for c in cfg.shrink(training, None)} == {
        "train_batch_size": 1, "gradient_accumulation_steps": 2,
    }  # fmt: skip
    # cache_latents cannot go with color_aug, and Prodigy has no 8-bit twin here
    assert cfg.shrink(training, None) == []


def test_existing_keys_are_changed_where_they_live():
    training = _doc("[training]\ngradient_accumulation_steps = 3\ntrain_batch_size = 2\n")
    training["training"]["gradient_checkpointing"] = True
    cfg.shrink(training, None)
    assert training["training"]["gradient_accumulation_steps"] == 6
    assert training["training"]["train_batch_size"] == 1
    assert "gradient_accumulation_steps" not in training


def test_copies_make_relative_paths_absolute(tmp_path):
    base = tmp_path / "project"
    (base / "models").mkdir(parents=True)
    (base / "models" / "m.safetensors").write_bytes(b"")
    src = base / "t.toml"
    src.write_text(
        "# my notes\n"
        'pretrained_model_name_or_path = "models/m.safetensors"\n'
        'vae = "stabilityai/sd-vae-ft-mse"\n'
        'output_dir = "out"\n'
        '[logging]\nlogging_dir = "logs"\n'
        'dataset_config = "ds.toml"\n'
    )
    ds = base / "ds.toml"
    ds.write_text('[[datasets]]\n[[datasets.subsets]]\nimage_dir = "data/10_x"\n')
    run = tmp_path / "run"
    ds_copy = run / "dataset_config.toml"
    cfg.copy_dataset_config(ds, ds_copy, base=base)
    doc = cfg.copy_training_config(
        src, run / "training_config.toml", base=base, dataset_copy=ds_copy
    )
    text = (run / "training_config.toml").read_text()
    assert text.startswith("# my notes\n")
    assert doc["pretrained_model_name_or_path"] == str(base / "models" / "m.safetensors")
    assert doc["vae"] == "stabilityai/sd-vae-ft-mse"  # a hub id stays a hub id
    assert doc["output_dir"] == str(base / "out")
    assert doc["logging"]["logging_dir"] == str(base / "logs")
    assert doc["logging"]["dataset_config"] == str(ds_copy)
    assert tomlkit.parse(ds_copy.read_text())["datasets"][0]["subsets"][0]["image_dir"] == str(
        base / "data" / "10_x"
    )
    assert src.read_text().count("models/m.safetensors") == 1  # the source is untouched


def test_write_attempt_points_training_at_its_dataset(tmp_path):
    training = _doc('dataset_config = "/elsewhere/ds.toml"\n')
    dataset = _doc("[[datasets]]\nbatch_size = 2\n")
    t, d = cfg.write_attempt(tmp_path / "attempts" / "2", training, dataset)
    assert tomlkit.parse(t.read_text())["dataset_config"] == str(d.resolve())
    assert Path(d).read_text() == "[[datasets]]\nbatch_size = 2\n"


def test_malformed_copy_is_a_config_error(tmp_path):
    from kohyagen.errors import ConfigError

    bad = tmp_path / "bad.toml"
    bad.write_text("x = [\n")
    with pytest.raises(ConfigError, match="malformed"):
        cfg.load(bad)


@pytest.mark.parametrize(
    ("status", "code"), [("succeeded", 0), ("failed", 3), ("interrupted", 130)]
)
def test_train_cli_exit_codes(tmp_path, monkeypatch, status, code):
    import kohyagen.launch.train

    failure = None if status == "succeeded" else Diagnosis("x", "it broke", "do this")

    def fake_train(*args, **kwargs):
        return TrainResult(
            tmp_path, status, [], failure, ["python", "x"], {"recommended": None}, 1.25
        )

    monkeypatch.setattr(kohyagen.launch.train, "train", fake_train)
    result = CliRunner().invoke(main, ["train", str(tmp_path / "c.toml")])
    assert result.exit_code == code, result.output
    assert f"training {status}" in result.output
    if failure:
        assert "it broke" in result.output and "do this" in result.output
