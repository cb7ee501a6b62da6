"""Hostile corpus, item 3: OS errors are known problems.

A full disk, a read-only file system, a permission denied or a name too long ends in
exit 1 (3 in training) naming the path and the fix, never "(this is a bug)"; a kill -9
leaves no staging folder the next run does not clean; files follow the umask. Errors
are raised where the OS would raise them (the test runs as any user, maybe root)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
from hostile_helpers import assert_known, hashes, invoke
from test_tag_helpers import RED, make_tagger, solid
from train_fixtures import make_run

from kohyagen.run import stages
from kohyagen.run.manifest import Manifest
from tests.test_run_pipeline import FakeStages


def _full(path="somewhere"):
    def raise_enospc(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    return raise_enospc


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    for i in range(3):
        solid(folder / f"{i}.png", (70 * i, 0, 0))
    return folder


def test_prepare_name_too_long(tmp_path, images):
    before = hashes(images)
    result = invoke("dataset", "prepare", images, "-o", tmp_path / ("x" * 300), "--concept", "c")
    assert_known(result, 1, "too long", "use shorter names")
    assert hashes(images) == before


def test_prepare_disk_full_leaves_no_staging(monkeypatch, tmp_path, images):
    before = hashes(images)
    out = tmp_path / "out"
    monkeypatch.setattr("kohyagen.dataset.prepare._build", _full(out / "0.png"))
    result = invoke("dataset", "prepare", images, "-o", out, "--concept", "c")
    assert_known(result, 1, "the disk is full", str(out / "0.png"), "free space")
    assert hashes(images) == before and list(out.iterdir()) == []


def test_prepare_cleans_what_a_kill_9_left(tmp_path, images):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    stale = out / f".kohyagen-staging-{dead.pid}-0000abcd"
    stale.mkdir(parents=True)
    (stale / "half.png").write_bytes(b"half")
    result = invoke("dataset", "prepare", images, "-o", out, "--concept", "c")
    assert_known(result, 0)
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir()) == [next(out.iterdir()).name]


def test_files_and_folders_follow_the_umask(tmp_path, images):
    old = os.umask(0o022)
    try:
        result = invoke("dataset", "prepare", images, "-o", tmp_path / "out", "--concept", "c")
        manifest = Manifest.create(tmp_path / "run", inputs={"images": "x"})
    finally:
        os.umask(old)
    assert_known(result, 0)
    subset = next((tmp_path / "out").iterdir())
    assert subset.stat().st_mode & 0o777 == 0o755  # mkdtemp made it 0700
    assert manifest.path.stat().st_mode & 0o777 == 0o644  # mkstemp made it 0600


def test_tag_disk_full_on_every_caption_exits_1(monkeypatch, tmp_path):
    folder = tmp_path / "images"
    solid(folder / "a.png", RED)
    before = hashes(folder)
    monkeypatch.setattr("kohyagen.tagging.loop.write_atomic", _full(folder / "a.txt"))
    result = invoke("tag", folder, "--model", make_tagger(tmp_path / "tagger"))
    assert_known(result, 1, "every image failed", "No space left on device")
    assert hashes(folder) == before


def test_report_on_a_read_only_disk(monkeypatch, tmp_path):
    run = make_run(tmp_path, [0.3, 0.2])

    def read_only(path, *_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr("kohyagen.report.summary.atomic_write_text", read_only)
    result = invoke("report", run)
    assert_known(result, 1, "read-only", "summary.json", "writable disk")


def test_pick_without_permission(monkeypatch, tmp_path):
    run = make_run(tmp_path, [0.3, 0.2])
    before = hashes(tmp_path / "out")

    def denied(src, dst, *_a, **_k):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr("kohyagen.report.pick.os.link", denied)
    monkeypatch.setattr("kohyagen.report.pick.shutil.copy2", denied)
    result = invoke("pick", run)
    assert_known(result, 1, "permission denied", "check the permissions")
    assert hashes(tmp_path / "out") == before
    assert not [p for p in (tmp_path / "out" / "output").iterdir() if p.name.startswith(".")]


def test_run_disk_full_in_training_exits_3_and_says_so(monkeypatch, tmp_path, images):
    FakeStages(monkeypatch)
    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "train", _full(tmp_path / "run" / "output"))
    result = invoke(
        "run", images, "--name", "x", "--trigger", "sks", "--gpu", "rtx4090", "-y",
        "--run-dir", tmp_path / "run",
    )  # fmt: skip
    assert_known(result, 3, "training stopped: the disk is full", "free space")
    manifest = Manifest.load(tmp_path / "run")
    assert manifest.status("train") == "failed"
    assert "disk is full" in json.dumps(manifest.stage("train"))


def test_train_disk_full_exits_3(monkeypatch, tmp_path):
    config = tmp_path / "training_config.toml"
    config.write_text('output_dir = "out"\noutput_name = "x"\n')
    monkeypatch.setattr("kohyagen.launch.train.train", _full(tmp_path / "out"))
    result = invoke("train", config)
    assert_known(result, 3, "the disk is full")


def test_own_temp_names_stay_within_name_limits(tmp_path):
    from PIL import Image

    from kohyagen.atomic import temp_name

    long = tmp_path / ("é" * 120 + ".txt")  # 244 bytes: fits, and so must its temp file
    assert len(temp_name(long).name.encode()) <= 255
    images = tmp_path / "images"
    images.mkdir()
    stem = "x" * 247
    Image.new("RGB", (64, 64), (1, 2, 3)).save(images / f"{stem}.gif")  # converted: a temp file
    (images / f"{stem}.txt").write_text("sks\n")
    before = hashes(images)
    result = invoke("dataset", "prepare", images, "-o", tmp_path / "out", "--concept", "c")
    assert_known(result, 0)
    assert hashes(images) == before
    subset = next((tmp_path / "out").iterdir())
    assert (subset / f"{stem}.png").is_file()
