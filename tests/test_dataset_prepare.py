"""prepare_dataset: a clean kohya subset built without touching the source."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from dataset_fixtures import caption, noise, rotated_jpeg, solid
from PIL import Image

from kohyagen.cli import main
from kohyagen.dataset.check import auto_repeats, check_dataset, prepare_dataset
from kohyagen.errors import DatasetError, UsageError


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under folder: content hash and modification time."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def source(tmp_path) -> Path:
    src = tmp_path / "photos"
    noise(src / "plain one.jpg", size=(600, 700), seed=1)
    caption(src / "plain one.txt", "a dog, grass, sks")
    noise(src / "two.png", size=(640, 640), seed=2)  # no caption
    rotated_jpeg(src / "turned.jpg", orientation=6, size=(640, 520))
    caption(src / "turned.caption", "outdoors\nsecond line")
    solid(src / "anim.gif", size=(600, 600), fmt="GIF")
    solid(src / "print.jpg", size=(600, 600), mode="CMYK")
    caption(src / "print.txt", b"caf\xe9, sks, sks")  # cp1252, trigger twice
    im = Image.new("RGBA", (600, 600), (255, 0, 0, 255))
    im.paste((0, 0, 0, 0), (0, 0, 300, 600))  # left half transparent (black underneath)
    im.save(src / "cut out.png")
    Image.fromarray(np.full((600, 600), 65535, np.uint16)).save(src / "deep.png")
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    (src / "Upper.Jpg").write_bytes((src / "plain one.jpg").read_bytes())
    return src


def test_prepare_builds_a_clean_subset_and_leaves_the_source_alone(tmp_path, source):
    before = snapshot(source)
    out = tmp_path / "training_data"
    result = prepare_dataset(source, out, concept="sks dog", repeats=10, trigger="sks")
    assert snapshot(source) == before

    sub = out / "10_sks dog"
    assert result.subset_dir == sub and result.repeats == 10
    names = sorted(p.name for p in sub.iterdir())
    assert names == sorted(
        ["plain one.jpg", "plain one.txt", "two.png", "two.txt", "turned.jpg", "turned.txt",
         "anim.png", "anim.txt", "print.png", "print.txt", "cut out.png", "cut out.txt",
         "deep.png", "deep.txt", "Upper.jpg", "Upper.txt"]
    )  # fmt: skip
    assert result.skipped == ((str(source / "broken.jpg"), result.skipped[0][1]),)
    assert (result.copied, result.converted, result.rotated) == (3, 5, 1)
    assert result.captions_written == 8

    # trigger first, once; captions created where none existed; UTF-8, first line only
    assert (sub / "plain one.txt").read_text(encoding="utf-8") == "sks, a dog, grass\n"
    assert (sub / "two.txt").read_text(encoding="utf-8") == "sks\n"
    assert (sub / "turned.txt").read_text(encoding="utf-8") == "sks, outdoors\n"
    assert (sub / "print.txt").read_text(encoding="utf-8") == "sks, café\n"

    # conversions
    with Image.open(sub / "turned.jpg") as im:  # 640x520 with orientation 6 -> 520x640
        assert im.size == (520, 640)
        assert im.getexif().get(0x0112, 1) == 1
    with Image.open(sub / "anim.png") as im:
        assert im.format == "PNG"
    with Image.open(sub / "print.png") as im:
        assert im.mode == "RGB"
    with Image.open(sub / "cut out.png") as im:
        assert im.mode == "RGB"
        assert im.getpixel((10, 10)) == (255, 255, 255)  # transparent -> white, not black
        assert im.getpixel((500, 10)) == (255, 0, 0)
    with Image.open(sub / "deep.png") as im:
        assert im.mode == "L" and im.getpixel((0, 0)) == 255  # scaled, not clipped noise
    assert (sub / "plain one.jpg").read_bytes() == (source / "plain one.jpg").read_bytes()

    # the result passes the check: no conversion, rotation or caption problems remain
    report = check_dataset(out, trigger="sks", caption_ext=".txt")
    assert {f.code for f in report.findings} <= {"too-few-images", "duplicate"}
    assert report.image_count == 8


def test_hard_links_for_unchanged_images_only(tmp_path, source):
    out = tmp_path / "out"
    result = prepare_dataset(source, out, concept="x", repeats=2, link=True)
    sub = out / "2_x"
    assert result.linked == result.copied == 3
    assert os.path.samefile(sub / "plain one.jpg", source / "plain one.jpg")
    assert not os.path.samefile(sub / "turned.jpg", source / "turned.jpg")
    assert (source / "two.png").stat().st_nlink == 2


def test_no_convert_and_no_orientation_fix(tmp_path, source):
    out = tmp_path / "out"
    result = prepare_dataset(
        source, out, concept="x", repeats=1, convert=False, fix_orientation=False
    )
    sub = out / "1_x"
    assert result.converted == 0
    assert {Path(f).name for f, _ in result.skipped} == {"broken.jpg", "anim.gif"}
    assert (sub / "turned.jpg").read_bytes() == (source / "turned.jpg").read_bytes()
    assert (sub / "print.jpg").exists()


def test_refuses_to_overwrite_without_force(tmp_path, source):
    out = tmp_path / "out"
    prepare_dataset(source, out, concept="x", repeats=3)
    sub = out / "3_x"
    (sub / "mine.txt").write_text("user file")
    with pytest.raises(DatasetError, match="not empty"):
        prepare_dataset(source, out, concept="x", repeats=3)
    with pytest.raises(DatasetError, match="kohya would train both"):
        prepare_dataset(source, out, concept="x", repeats=5)
    assert (sub / "mine.txt").read_text() == "user file"
    result = prepare_dataset(source, out, concept="x", repeats=3, trigger="new", force=True)
    assert (sub / "two.txt").read_text() == "new\n"
    assert (sub / "mine.txt").read_text() == "user file"  # --force overwrites, never deletes
    assert any("mine.txt" in n for n in result.notes)
    assert not [p for p in out.iterdir() if p.name.startswith(".kohyagen")]  # no temp left


def test_auto_repeats_scale_with_image_count(tmp_path, source):
    assert [auto_repeats(n) for n in (1, 5, 20, 40, 100, 150, 300)] == [100, 30, 10, 8, 3, 2, 1]
    result = prepare_dataset(source, tmp_path / "out", concept="x")
    assert result.repeats == auto_repeats(8) == 19


def test_bad_inputs(tmp_path, source):
    with pytest.raises(DatasetError, match="not found"):
        prepare_dataset(tmp_path / "nope", tmp_path / "out", concept="x")
    with pytest.raises(DatasetError, match="got a file"):
        prepare_dataset(source / "two.png", tmp_path / "out", concept="x")
    with pytest.raises(UsageError):
        prepare_dataset(source, tmp_path / "out", concept="../x")
    with pytest.raises(UsageError):
        prepare_dataset(source, tmp_path / "out", concept="x", repeats="lots")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DatasetError, match="is a file"):
        prepare_dataset(source, tmp_path / "afile", concept="x")
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / "3_x").write_text("x")
    with pytest.raises(DatasetError, match="in the way"):
        prepare_dataset(source, tmp_path / "o2", concept="x", repeats=3, force=True)
    empty = tmp_path / "empty"
    (empty / "10_already").mkdir(parents=True)
    with pytest.raises(DatasetError, match="pass one of them"):
        prepare_dataset(empty, tmp_path / "out", concept="x")


def test_cli_prepare(tmp_path, source):
    out = tmp_path / "td"
    runner = CliRunner()
    args = [
        "dataset",
        "prepare",
        str(source),
        "--concept",
        "sks",
        "--trigger",
        "sks",
        "-o",
        str(out),
    ]
    result = runner.invoke(main, [*args, "--repeats", "4", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["repeats"] == 4 and data["converted"] == 5
    again = runner.invoke(main, [*args, "--repeats", "4"])
    assert again.exit_code == 1
    assert "--force" in again.output
    text = runner.invoke(main, [*args, "--repeats", "4", "--force"])
    assert text.exit_code == 0, text.output
    assert "4_sks" in text.output and "next: kohyagen dataset check" in text.output
    missing = runner.invoke(main, ["dataset", "prepare", str(tmp_path / "nope"), "--concept", "x"])
    assert missing.exit_code == 1 and "not found" in missing.output
