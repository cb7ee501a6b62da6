"""`kohyagen run` for a DiT family: its model files by --model-file (as `config` takes them),
recorded as an input of the run folder, and given back to the pipeline by the queue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kohyagen.cli import main
from kohyagen.run.manifest import MANIFEST_NAME, Manifest
from tests.conftest import make_image
from tests.family_fixtures import family_files


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    for i in range(4):
        make_image(folder / f"{i}.png", size=(1024, 1024), color=(i * 40, 10, 10))
        (folder / f"{i}.txt").write_text(f"sks, picture {i}\n")
    return folder


def _run(images: Path, run_dir: Path, files: dict[str, str], *extra: str):
    args = ["run", str(images), "--name", "fl", "--trigger", "sks", "--model", "flux",
            "--gpu", "rtx4090", "--run-dir", str(run_dir), "--prepare-only", "--json"]  # fmt: skip
    for role, path in files.items():
        args += ["--model-file", f"{role}={path}"]
    return CliRunner().invoke(main, [*args, *extra])


def test_run_renders_a_flux_config_from_model_files(images, tmp_path):
    files = family_files("flux", tmp_path / "models")
    result = _run(images, tmp_path / "run", files)
    assert result.exit_code == 0, result.output
    training = (tmp_path / "run" / "training_config.toml").read_text()
    for role in ("clip_l", "t5xxl", "ae"):
        assert f'{role} = "{files[role]}"' in training
    assert f'pretrained_model_name_or_path = "{files["dit"]}"' in training
    recorded = Manifest.load(tmp_path / "run").data["inputs"]["model_files"]
    assert recorded == sorted([role, path] for role, path in files.items())


def test_the_same_files_continue_the_run_and_other_files_are_refused(images, tmp_path):
    files = family_files("flux", tmp_path / "models")
    assert _run(images, tmp_path / "run", files).exit_code == 0
    again = _run(images, tmp_path / "run", files)
    assert again.exit_code == 0, again.output
    other = dict(files, clip_l=family_files("flux", tmp_path / "other")["clip_l"])
    refused = _run(images, tmp_path / "run", other)
    assert refused.exit_code == 1
    assert "other inputs" in refused.output and "model_files" in refused.output


def test_missing_model_files_name_an_option_run_takes(images, tmp_path):
    files = family_files("flux", tmp_path / "models")
    del files["t5xxl"]
    result = _run(images, tmp_path / "run", files)
    assert result.exit_code == 1
    assert "--model-file t5xxl=PATH" in result.output and "--fetch" in result.output
    help_text = CliRunner().invoke(main, ["run", "--help"]).output
    assert "--model-file" in help_text and "--fetch" in help_text


def test_a_bad_model_file_item_is_a_usage_error(images, tmp_path):
    result = CliRunner().invoke(main, ["run", str(images), "--name", "x", "--trigger", "sks",
                                       "--model-file", "no-equals-sign"])  # fmt: skip
    assert result.exit_code == 2 and "ROLE=PATH" in result.output


def test_a_run_folder_from_before_model_files_still_continues(images, tmp_path):
    # a manifest written before model files were an input lacks the key: the same
    # inputs as an sd15 run that gives none
    args = ["run", str(images), "--name", "x", "--trigger", "sks", "--gpu", "rtx4090",
            "--run-dir", str(tmp_path / "run"), "--prepare-only"]  # fmt: skip
    assert CliRunner().invoke(main, args).exit_code == 0
    path = tmp_path / "run" / MANIFEST_NAME
    data = json.loads(path.read_text())
    assert data["inputs"].pop("model_files") is None
    path.write_text(json.dumps(data))
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output


def test_the_queue_gives_the_recorded_files_back(images, tmp_path, monkeypatch):
    files = family_files("flux", tmp_path / "models")
    assert _run(images, tmp_path / "run", files, "--fetch").exit_code == 0
    seen = []

    def fake_pipeline(options, progress=None):
        seen.append(options)
        raise SystemExit(0)

    monkeypatch.setattr("kohyagen.run.pipeline.run_pipeline", fake_pipeline)
    from kohyagen.run.queue_item import _continue_run, classify

    with pytest.raises(SystemExit):
        _continue_run(classify(tmp_path / "run"), backend=None, sd_scripts=None, progress=None)
    assert dict(seen[0].model_files) == files and seen[0].fetch is True
    manifest = json.loads((tmp_path / "run" / MANIFEST_NAME).read_text())
    assert manifest["inputs"]["fetch"] is True
