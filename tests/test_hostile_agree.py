"""Hostile corpus, item 6: commands that agree.

tag on a kohya train dir tags every concept folder; run accepts what its prepare stage
converts; the demo runs the tag stage; estimate plans what config writes. Each asserts
the exit code, the message, no traceback and unchanged user files."""

from __future__ import annotations

import json

import pytest
from hostile_helpers import assert_known, hashes, invoke
from test_tag_helpers import RED, make_tagger, solid

from kohyagen.run import stages
from kohyagen.run.manifest import Manifest
from kohyagen.run.pipeline import run_pipeline
from tests.test_run_pipeline import FakeStages, options


def test_tag_on_a_kohya_train_dir_tags_every_concept(tmp_path):
    root = tmp_path / "train"
    solid(root / "10_sks" / "a.png", RED)
    solid(root / "5_other" / "b.png", RED)
    solid(root / "notes" / "c.png", RED)  # not a concept folder: kohya skips it
    result = invoke("tag", root, "--model", make_tagger(tmp_path / "tagger"), "--json")
    assert_known(result, 0)
    assert json.loads(result.stdout)["tagged"] == 2
    assert (root / "10_sks" / "a.txt").is_file() and (root / "5_other" / "b.txt").is_file()
    assert not (root / "notes" / "c.txt").exists()


@pytest.mark.parametrize("formats", [("GIF", "TIFF"), ("GIF", "TIFF", "PNG")])
def test_run_accepts_what_prepare_converts(monkeypatch, tmp_path, formats):
    from PIL import Image

    FakeStages(monkeypatch)
    for name in ("check", "prepare"):
        monkeypatch.setitem(stages.STAGE_FUNCTIONS, name, getattr(stages, f"_stage_{name}"))
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        fmt = formats[i % len(formats)]
        Image.new("RGB", (256, 256), (40 * i, 9, 9)).save(images / f"{i}.{fmt.lower()}", fmt)
        (images / f"{i}.txt").write_text("sks, red\n")
    before = hashes(images)
    run_pipeline(options(images, tmp_path), stop_after="prepare")
    manifest = Manifest.load(tmp_path / "run")
    assert manifest.outputs("prepare")["images"] == 6
    assert hashes(images) == before


def test_demo_runs_the_tag_stage_on_its_tiny_tagger(tmp_path):
    pytest.importorskip("torch")
    from kohyagen.run.demo import DEMO_UNCAPTIONED, prepare_demo

    demo = prepare_demo(tmp_path)
    assert demo.tagger is not None
    result = run_pipeline(demo, stop_after="tag")
    manifest = Manifest.load(result.run_dir)
    assert manifest.status("tag") == "done"
    assert manifest.outputs("tag")["tagged"] == DEMO_UNCAPTIONED


def test_estimate_fits_kohyagens_own_sdxl_preset_on_a_4090():
    result = invoke("estimate", "--images", "20", "--model", "sdxl", "--gpu", "rtx4090", "--json")
    assert_known(result, 0)
    data = json.loads(result.stdout)
    assert data["fits"] != "no", data["notes"]


def _train_dir(tmp_path):
    for i in range(6):
        solid(tmp_path / "train" / "5_sks" / f"{i}.png", (40 * i, 9, 9), size=(64, 64))
        (tmp_path / "train" / "5_sks" / f"{i}.txt").write_text("sks, red\n")
    return tmp_path / "train"


def test_estimate_dataset_and_config_agree_with_config(tmp_path):
    train = _train_dir(tmp_path)
    before = hashes(train)
    made = invoke(
        "config", train, "--model", "sdxl", "--gpu", "rtx4090", "-o", tmp_path / "cfg", "--json"
    )
    assert_known(made, 0)
    plan = json.loads(made.stdout)["plan"]
    by_dataset = invoke("estimate", train, "--model", "sdxl", "--gpu", "rtx4090", "--json")
    by_config = invoke(
        "estimate", tmp_path / "cfg" / "training_config.toml", "--gpu", "rtx4090", "--json"
    )
    for result in (by_dataset, by_config):
        assert_known(result, 0)
        data = json.loads(result.stdout)
        assert data["batch_size"] == plan["batch_size"], data
        assert data["epochs"] == plan["epochs"]
        assert data["steps"] == plan["total_steps"]
        assert data["fits"] != "no"
    assert json.loads(by_config.stdout)["model"] == "sdxl"  # read from the config
    assert hashes(train) == before


def test_estimate_config_without_images_is_a_usage_error(tmp_path):
    config = tmp_path / "training_config.toml"
    config.write_text('output_name = "x"\nmax_train_epochs = 3\n')
    result = invoke("estimate", config, "--gpu", "rtx4090")
    assert_known(result, 2, "no images", "--images")


def test_estimate_never_refuses_a_plan_config_would_write():
    """For every model x GPU preset that config can fit, estimate agrees that it fits."""
    from kohyagen.config.presets import list_gpus, list_models
    from kohyagen.estimate.from_config import preset_plan
    from kohyagen.estimate.plan import estimate

    checked = 0
    for gpu in list_gpus():
        for model in (m.name for m in list_models()):  # the DiT families too
            plan = preset_plan(model, gpu.name)
            if plan is None:
                continue  # config refuses it too
            est = estimate(model=model, gpu=gpu.name, images=20, epochs=10, **plan)
            assert est.fits != "no", (model, gpu.name, est.notes)
            checked += 1
    assert checked > 60
