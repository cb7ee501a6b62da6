"""A run folder moved to another place (prepare on a laptop, train on a rented GPU)."""

from __future__ import annotations

import shutil

import pytest

from kohyagen.config.schema import load_toml
from kohyagen.errors import RunStateError
from kohyagen.run import stages
from kohyagen.run.manifest import Manifest
from kohyagen.run.pipeline import run_pipeline
from kohyagen.run.relocate import rewrite
from tests.conftest import make_image
from tests.test_run_pipeline import FakeStages, options


def test_rewrite_moves_only_whole_path_prefixes():
    data = {"a": "/x/run", "b": ["/x/run/output", "/x/run2/keep", "/x/runner"], "c": 3}
    assert rewrite(data, "/x/run", "/y/r") == {
        "a": "/y/r", "b": ["/y/r/output", "/x/run2/keep", "/x/runner"], "c": 3
    }  # fmt: skip


def test_prepared_run_folder_continues_after_a_move(monkeypatch, tmp_path):
    fake = FakeStages(monkeypatch)

    def config(ctx):
        fake.config(ctx)
        (ctx.run_dir / "training_config.toml").write_text(
            f'[model]\noutput_dir = "{ctx.run_dir / "output"}"\n'
            f'dataset_config = "{ctx.run_dir / "dataset_config.toml"}"\n'
        )
        (ctx.run_dir / "dataset_config.toml").write_text(
            f'[[datasets]]\n[[datasets.subsets]]\nimage_dir = "{ctx.options.images.resolve()}"\n'
        )
        return {"gpu": "rtx4090"}, "configs"

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "config", config)
    laptop = tmp_path / "laptop"
    for i in range(3):
        make_image(laptop / "images" / f"{i}.png", color=(i, 0, 0))
    run_pipeline(
        options(laptop / "images", tmp_path, run_dir=laptop / "run"), stop_after="estimate"
    )

    rented = tmp_path / "rented"
    shutil.copytree(laptop, rented)
    shutil.rmtree(laptop)
    fake.calls.clear()
    said = []
    result = run_pipeline(
        options(rented / "images", tmp_path, run_dir=rented / "run"),
        progress=lambda s, m: said.append(m),
    )
    assert fake.calls == ["train", "report", "pick"]
    assert result.resumed_from == "train"
    assert any("paths updated" in m for m in said)
    run_dir = (rented / "run").resolve()
    training = load_toml(run_dir / "training_config.toml").data["model"]
    assert training["output_dir"] == str(run_dir / "output")
    assert training["dataset_config"] == str(run_dir / "dataset_config.toml")
    subset = load_toml(run_dir / "dataset_config.toml").data["datasets"][0]["subsets"][0]
    assert subset["image_dir"] == str((rented / "images").resolve())
    m = Manifest.load(run_dir)
    assert m.data["run_dir"] == str(run_dir)
    assert m.data["inputs"]["images"] == str((rented / "images").resolve())
    assert m.data["configs"]["training"] == str(run_dir / "training_config.toml")


def test_moved_images_with_other_content_are_refused(monkeypatch, tmp_path):
    FakeStages(monkeypatch)
    for i in range(2):
        make_image(tmp_path / "a" / f"{i}.png", color=(i, 0, 0))
        make_image(tmp_path / "b" / f"{i}.png", color=(0, i, 9))
    run_pipeline(options(tmp_path / "a", tmp_path), stop_after="estimate")
    with pytest.raises(RunStateError) as info:
        run_pipeline(options(tmp_path / "b", tmp_path))
    assert "other inputs" in str(info.value) and "images" in str(info.value)
