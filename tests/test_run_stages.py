"""Single stages of `kohyagen run` against a real manifest: the tag stage's caption policy."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from kohyagen.run.context import RunContext, RunOptions
from kohyagen.run.dataset_hash import hash_dataset
from kohyagen.run.manifest import Manifest
from kohyagen.run.stages import STAGE_FUNCTIONS
from tests.conftest import make_image


@pytest.fixture
def fake_tagger(monkeypatch):
    """kohyagen.tagging.directory with a tag_directory that captions the uncaptioned images."""
    calls = []

    def tag_directory(
        path, *, trigger=None, caption_ext=".txt", mode="skip", recursive=False, **kw
    ):
        calls.append({"path": Path(path), "trigger": trigger, "mode": mode, "recursive": recursive})
        tagged = 0
        for image in sorted(Path(path).rglob("*.png")):
            caption = image.with_suffix(caption_ext)
            if not caption.exists():
                caption.write_text(f"{trigger}, 1girl, solo\n")
                tagged += 1
        return types.SimpleNamespace(tagged=tagged, skipped=0, failed=0, failures=())

    module = types.ModuleType("kohyagen.tagging.directory")
    module.tag_directory = tag_directory
    monkeypatch.setitem(sys.modules, "kohyagen.tagging.directory", module)
    return calls


def context(tmp_path, images, *, prepared: Path | None) -> RunContext:
    manifest = Manifest.create(tmp_path / "run", inputs={})
    manifest.start("check")
    kind = "image_folder" if prepared else "train_dir"
    manifest.finish("check", outputs={"kind": kind, "caption_extension": ".txt"})
    manifest.start("prepare")
    if prepared:
        manifest.finish("prepare", outputs={"train_dir": str(prepared)})
    else:
        manifest.finish("prepare", skipped=True)
    options = RunOptions(images=images, name="x", trigger="sks")
    return RunContext(options, manifest, manifest.run_dir, lambda s, m: None, None)


def test_prepared_copy_is_tagged_and_gets_the_trigger_first(tmp_path, fake_tagger):
    subset = tmp_path / "run" / "training_data" / "10_x"
    for i in range(3):
        make_image(subset / f"{i}.png")
    (subset / "0.txt").write_text("red dress, smile\n")
    (subset / "1.txt").write_text("smile, sks\nsecond line kept\n")
    ctx = context(tmp_path, tmp_path / "images", prepared=subset.parent)
    outputs, note = STAGE_FUNCTIONS["tag"](ctx)
    assert fake_tagger == [
        {"path": subset.parent, "trigger": "sks", "mode": "skip", "recursive": True}
    ]
    assert outputs["tagged"] == 1 and outputs["trigger_added"] == 2
    assert (subset / "0.txt").read_text() == "sks, red dress, smile\n"
    assert (subset / "1.txt").read_text() == "sks, smile\nsecond line kept\n"
    assert (subset / "2.txt").read_text().startswith("sks, ")
    assert "tagged 1" in note


def test_all_captioned_with_trigger_is_skipped(tmp_path, fake_tagger):
    subset = tmp_path / "run" / "training_data" / "10_x"
    make_image(subset / "0.png")
    (subset / "0.txt").write_text("sks, smile\n")
    ctx = context(tmp_path, tmp_path / "images", prepared=subset.parent)
    assert STAGE_FUNCTIONS["tag"](ctx) is None
    assert fake_tagger == []


def test_users_train_dir_keeps_its_captions_and_records_the_new_content(tmp_path, fake_tagger):
    train_dir = tmp_path / "mine"
    subset = train_dir / "5_x"
    make_image(subset / "0.png")
    make_image(subset / "1.png", color=(1, 2, 3))
    (subset / "0.txt").write_text("no trigger here\n")
    ctx = context(tmp_path, train_dir, prepared=None)
    ctx.manifest.update("dataset", source=hash_dataset(train_dir).to_dict())
    outputs, _ = STAGE_FUNCTIONS["tag"](ctx)
    assert outputs["tagged"] == 1 and outputs["trigger_added"] == 0
    assert (subset / "0.txt").read_text() == "no trigger here\n"  # the user's caption, untouched
    assert (subset / "1.txt").exists()
    recorded = Manifest.load(tmp_path / "run").data["dataset"]["source"]["digest"]
    assert recorded == hash_dataset(train_dir).digest


def test_sd_scripts_revision_is_recorded_for_the_kohya_backend(tmp_path):
    import subprocess

    from kohyagen.run.stages_training import _record_sd_scripts

    checkout = tmp_path / "sd-scripts"
    checkout.mkdir()
    (checkout / "train_network.py").write_text("")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}  # fmt: skip
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(checkout), *cmd], check=True, env=env)
    rev = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    manifest = Manifest.create(tmp_path / "run", inputs={})
    options = RunOptions(images=tmp_path, name="x", trigger="sks", backend="kohya",
                         sd_scripts=checkout)  # fmt: skip
    ctx = RunContext(options, manifest, manifest.run_dir, lambda s, m: None, None)
    _record_sd_scripts(ctx)
    versions = Manifest.load(tmp_path / "run").data["versions"]
    assert versions["sd_scripts"] == {"path": str(checkout.resolve()), "rev": rev}
