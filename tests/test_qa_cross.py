"""Cross-command checks: what one command writes, the next one reads without surprises."""

from __future__ import annotations

from click.testing import CliRunner
from train_fixtures import write_configs

from kohyagen.cli import main


def test_train_refuses_a_dataset_config_given_as_the_training_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, dataset = write_configs(tmp_path)
    result = CliRunner().invoke(main, ["train", str(dataset), "--backend", "builtin", "--dry-run"])
    assert result.exit_code == 1, result.output
    assert "dataset config" in result.output
    assert "training_config.toml" in result.output  # the fix names the file to pass
    assert not (tmp_path / "runs").exists()
