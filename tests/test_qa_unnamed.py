"""Runs without output_name: kohya names files epoch-NNNNNN, at-stepNNNNNNNN and last."""

from __future__ import annotations

from click.testing import CliRunner
from train_fixtures import write_checkpoint, write_configs

from kohyagen.cli import main


def _unnamed_run(tmp_path):
    out = tmp_path / "output"
    run = tmp_path / "run"
    run.mkdir()
    (run / "training_config.toml").write_text(f'output_dir = "{out}"\nmax_train_epochs = 3\n')
    log = [
        f"epoch {e}/3\n\nsaving checkpoint: {out / f'epoch-{e:06d}.safetensors'}\n" for e in (1, 2)
    ]
    log.append(f"epoch 3/3\n\nsaving checkpoint: {out / 'last.safetensors'}\nmodel saved.\n")
    (run / "train.log").write_text("".join(log))
    write_checkpoint(out / "epoch-000001.safetensors", epoch=1, step=4)
    write_checkpoint(out / "epoch-000002.safetensors", epoch=2, step=8)
    write_checkpoint(out / "last.safetensors", epoch=3, step=12)
    write_checkpoint(out / "at-step00000004.safetensors", step=4)
    return run, out


def test_pick_sees_every_checkpoint_of_an_unnamed_run(tmp_path):
    import json

    run, _ = _unnamed_run(tmp_path)
    result = CliRunner().invoke(main, ["pick", str(run), "--by", "train", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    files = {row["file"] for row in data["ranking"]}
    assert files == {
        "epoch-000001.safetensors",
        "epoch-000002.safetensors",
        "last.safetensors",
        "at-step00000004.safetensors",
    }


def test_train_guards_the_checkpoints_of_an_unnamed_earlier_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, _ = write_configs(tmp_path)
    text = config.read_text()
    text = "\n".join(line for line in text.splitlines() if not line.startswith("output_name"))
    config.write_text(text + "\n")
    write_checkpoint(tmp_path / "out" / "output" / "epoch-000001.safetensors", epoch=1)
    result = CliRunner().invoke(main, ["train", str(config), "--backend", "builtin"])
    assert result.exit_code == 1, result.output
    assert "overwrite" in result.output
