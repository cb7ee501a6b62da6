"""Hostile corpus, item 1: never touch what is not yours.

pick on a copied run folder, run --restart with the images inside the run folder,
caption extensions that are paths, a BOM in an appended caption, and a user's N_name
folders without captions. Each asserts the exit code, the message, no traceback and
unchanged hashes of the user's files."""

from __future__ import annotations

import json
import shutil

import pytest
from hostile_helpers import assert_known, hashes, invoke
from test_tag_helpers import RED, make_tagger, read_tags, solid
from train_fixtures import make_run

from kohyagen.run import stages
from kohyagen.run.pipeline import run_pipeline
from tests.test_run_pipeline import FakeStages, options


def _run_with_own_output(root):
    """A finished run whose output/ is inside its folder, as `kohyagen run` makes it."""
    run = make_run(root, [0.3, 0.2, 0.25])
    out = root / "out" / "output"
    shutil.move(str(out), str(run / "output"))
    for name in ("training_config.toml", "train.log"):
        path = run / name
        path.write_text(path.read_text().replace(str(out), str(run / "output")))
    (run / "train.json").write_text(json.dumps({"run_dir": str(run.resolve())}))
    return run


def test_pick_prune_on_a_copy_prunes_only_the_copy(tmp_path):
    original = _run_with_own_output(tmp_path / "a")
    before = hashes(original)
    copy = tmp_path / "b" / "run"
    shutil.copytree(original, copy)
    result = invoke("pick", copy, "--prune", "--json")
    assert_known(result, 0)
    data = json.loads(result.stdout)
    assert len(data["pruned"]) == 2 and all(p.startswith(str(copy)) for p in data["pruned"])
    assert data["best_path"].startswith(str(copy))
    assert hashes(original) == before  # the original's checkpoints are all there
    assert sorted(p.name for p in (copy / "output").iterdir()) == [
        "mylora-000002.safetensors",
        "mylora-best.safetensors",
    ]
    report = invoke("report", copy, "--json")
    assert_known(report, 0)
    files = [c["path"] for c in json.loads(report.stdout)["checkpoints"]]
    assert files and all(f.startswith(str(copy)) for f in files)


def test_pick_on_a_copy_whose_checkpoints_are_elsewhere_is_refused(tmp_path):
    original = make_run(tmp_path / "a", [0.3, 0.2])
    (original / "train.json").write_text(json.dumps({"run_dir": str(original.resolve())}))
    outputs = tmp_path / "a" / "out"
    before = hashes(outputs)
    copy = tmp_path / "b" / "run"
    shutil.copytree(original, copy)
    result = invoke("pick", copy, "--prune")
    assert_known(result, 1, "copied or moved from", "will not")
    assert hashes(outputs) == before


def test_restart_never_moves_the_images_or_the_users_files(monkeypatch, tmp_path):
    FakeStages(monkeypatch)
    run_dir = tmp_path / "run"
    elsewhere = tmp_path / "first"
    for i in range(4):
        solid(elsewhere / f"{i}.png", (60 * i, 0, 0))
    run_pipeline(options(elsewhere, tmp_path, run_dir=run_dir))
    images = run_dir / "my_images"
    shutil.copytree(elsewhere, images)
    (run_dir / "notes.md").write_text("mine\n")
    before = hashes(images)
    result = run_pipeline(options(images, tmp_path, run_dir=run_dir, restart=True))
    assert result.lora is not None
    assert hashes(images) == before
    assert (run_dir / "notes.md").read_text() == "mine\n"
    moved = next((run_dir / "previous").iterdir())
    assert (moved / "kohyagen.json").is_file() and not (moved / "my_images").exists()


@pytest.mark.parametrize("ext", ["/../evil.txt", "../x", ".t/xt", ".png"])
def test_tag_caption_ext_that_is_a_path(tmp_path, ext):
    images = tmp_path / "images"
    solid(images / "a.png", RED)
    tagger = make_tagger(tmp_path / "tagger")
    before = hashes(tmp_path)
    result = invoke("tag", images, "--model", tagger, "--caption-ext", ext)
    assert_known(result, 2, "caption extension")
    assert hashes(tmp_path) == before


def test_prepare_caption_ext_that_is_a_path(tmp_path):
    images = tmp_path / "images"
    solid(images / "a.png", RED)
    before = hashes(tmp_path)
    result = invoke(
        "dataset", "prepare", images, "-o", tmp_path / "out", "--concept", "sks",
        "--caption-ext", "/../evil.txt",
    )  # fmt: skip
    assert_known(result, 2, "caption extension")
    assert hashes(tmp_path) == before


def test_tag_append_ignores_a_bom(tmp_path):
    images = tmp_path / "images"
    solid(images / "a.png", RED)
    (images / "a.txt").write_text("\ufeff1girl, mine\n", encoding="utf-8")
    tagger = make_tagger(tmp_path / "tagger")
    result = invoke("tag", images, "--model", tagger, "--mode", "append")
    assert_known(result, 0, "tagged 1")
    tags = read_tags(images / "a.txt")
    assert tags.count("1girl") == 1 and tags[:2] == ["1girl", "mine"]


def test_run_tags_a_copy_of_the_users_kohya_folders(monkeypatch, tmp_path):
    FakeStages(monkeypatch)
    for name in ("check", "prepare", "tag"):
        monkeypatch.setitem(stages.STAGE_FUNCTIONS, name, getattr(stages, f"_stage_{name}"))
    tagger = make_tagger(tmp_path / "tagger")
    import kohyagen.tagging.directory as directory

    real = directory.tag_directory
    monkeypatch.setattr(directory, "tag_directory", lambda *a, **k: real(*a, model=tagger, **k))
    user = tmp_path / "mine"
    for i in range(3):
        solid(user / "10_sks" / f"{i}.png", (80 * i, 0, 0), size=(64, 64))
    before = hashes(user)
    run_pipeline(options(user, tmp_path, run_dir=tmp_path / "run"), stop_after="tag")
    assert hashes(user) == before  # no caption written into the user's folders
    copy = tmp_path / "run" / "training_data" / "10_sks"
    # kohya's default caption_extension when the folders hold none
    assert sorted(p.name for p in copy.glob("*.caption")) == ["0.caption", "1.caption", "2.caption"]


@pytest.mark.parametrize("damage", [b"", b"{not json", b"[1, 2]"])
def test_pick_on_a_copy_with_damaged_records_acts_only_inside_it(tmp_path, damage):
    original = make_run(tmp_path / "a", [0.3, 0.2])
    outputs = tmp_path / "a" / "out"
    before = hashes(outputs)
    copy = tmp_path / "b" / "run"
    shutil.copytree(original, copy)
    # nothing left that says where the folder was made
    (copy / "train.json").write_bytes(damage)
    (copy / "kohyagen.json").write_bytes(damage)
    for args in (("--prune",), ()):
        result = invoke("pick", copy, *args)
        assert_known(result, 1, "cannot be read", "will not")
    assert hashes(outputs) == before


def test_pick_on_a_plain_kohya_folder_still_writes_beside_its_checkpoints(tmp_path):
    # no train.json, no kohyagen.json at all: a folder kohya made, not a damaged copy
    run = make_run(tmp_path / "a", [0.3, 0.2])
    for name in ("train.json", "kohyagen.json"):
        (run / name).unlink(missing_ok=True)
    result = invoke("pick", run)
    assert_known(result, 0)
