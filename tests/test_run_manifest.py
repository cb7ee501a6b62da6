"""The run manifest: round trip, atomic writes, stage bookkeeping, dataset hashes."""

from __future__ import annotations

import json
import subprocess

import pytest

from kohyagen.errors import RunStateError
from kohyagen.run.dataset_hash import describe_change, hash_dataset
from kohyagen.run.manifest import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    STAGES,
    Manifest,
    write_json_atomic,
)
from kohyagen.run.versions import collect_versions, git_revision
from tests.conftest import make_image


def test_round_trip(tmp_path):
    m = Manifest.create(tmp_path / "run", inputs={"name": "x", "model": "sd15"})
    assert m.path.is_file()
    assert m.first_unfinished() == "check"
    m.start("check")
    assert Manifest.load(tmp_path / "run").status("check") == RUNNING
    m.finish("check", outputs={"images": 3}, note="3 images")
    m.start("prepare")
    m.finish("prepare", skipped=True, note="already a train dir")
    m.start("tag")
    m.fail("tag", "boom")
    m.update("configs", training="/x/training_config.toml")
    m.set("seed", 42)
    loaded = Manifest.load(tmp_path / "run")
    assert loaded.data == json.loads(m.path.read_text())
    assert loaded.status("check") == DONE and loaded.outputs("check") == {"images": 3}
    assert loaded.status("prepare") == SKIPPED and loaded.is_finished("prepare")
    assert loaded.status("tag") == FAILED and loaded.stage("tag")["error"] == "boom"
    assert loaded.first_unfinished() == "tag"
    assert loaded.data["seed"] == 42
    assert loaded.data["configs"]["training"] == "/x/training_config.toml"
    assert loaded.data["versions"]["kohyagen"]
    assert [s for s, _, _ in loaded.summary()] == list(STAGES)
    # a second start counts attempts
    loaded.start("tag")
    assert loaded.stage("tag")["attempts"] == 2


def test_reset_keeps_previous_records(tmp_path):
    m = Manifest.create(tmp_path, inputs={})
    for stage in STAGES[:4]:
        m.start(stage)
        m.finish(stage)
    m.reset_from("tag")
    assert m.status("prepare") == DONE
    assert m.status("tag") == PENDING and m.stage("tag")["previous"]["status"] == DONE
    assert m.first_unfinished() == "tag"


def test_load_missing_and_corrupt(tmp_path):
    assert Manifest.load(tmp_path) is None
    (tmp_path / "kohyagen.json").write_text("{not json")
    with pytest.raises(RunStateError) as info:
        Manifest.load(tmp_path)
    assert info.value.path == tmp_path / "kohyagen.json"
    (tmp_path / "kohyagen.json").write_text('{"format": 99}')
    with pytest.raises(RunStateError):
        Manifest.load(tmp_path)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"a": 1})

    class Unserialisable:
        def __str__(self):
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        write_json_atomic(target, {"a": Unserialisable()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_dataset_hash_detects_and_describes_changes(tmp_path):
    make_image(tmp_path / "a.png", color=(1, 2, 3))
    make_image(tmp_path / "b.png", color=(4, 5, 6))
    (tmp_path / "a.txt").write_text("sks, cat\n")
    (tmp_path / "notes.md").write_text("ignored")
    first = hash_dataset(tmp_path)
    assert set(first.files) == {"a.png", "b.png", "a.txt"}
    assert hash_dataset(tmp_path) == first
    (tmp_path / "a.txt").write_text("sks, dog\n")
    make_image(tmp_path / "c.png")
    (tmp_path / "b.png").unlink()
    second = hash_dataset(tmp_path)
    assert second.digest != first.digest
    text = describe_change(first, second)
    assert "1 added (c.png)" in text and "1 removed (b.png)" in text and "1 changed (a.txt)" in text


def test_versions_include_sd_scripts_revision(tmp_path):
    repo = tmp_path / "sd-scripts"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}  # fmt: skip
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    (repo / "train_network.py").write_text("")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "x"], check=True, env=env)
    rev = git_revision(repo)
    assert rev and len(rev) == 40
    versions = collect_versions(repo)
    assert versions["sd_scripts"]["rev"] == rev
    assert git_revision(tmp_path / "nothing") is None


def test_dataset_hash_covers_two_levels_and_skips_the_run_folder(tmp_path):
    make_image(tmp_path / "a.png")
    make_image(tmp_path / "10_x" / "b.png")
    make_image(tmp_path / "10_x" / "deep" / "c.png")  # kohya does not read this deep
    make_image(tmp_path / ".hidden" / "d.png")
    make_image(tmp_path / "runs" / "e.png")
    digest = hash_dataset(tmp_path, exclude=tmp_path / "runs")
    assert set(digest.files) == {"a.png", "10_x/b.png"}
    make_image(tmp_path / "runs" / "f.png", color=(9, 9, 9))
    make_image(tmp_path / "10_x" / "deep" / "g.png")
    assert hash_dataset(tmp_path, exclude=tmp_path / "runs") == digest
