"""No input crashes the check: every hostile file becomes a finding, every bad path a clean error."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from dataset_fixtures import caption, png_header_only, solid, truncate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from kohyagen.cli import main
from kohyagen.dataset.check import check_dataset
from kohyagen.dataset.containers import completeness_problem
from kohyagen.dataset.images import probe_image


def run_check(*args: str):
    return CliRunner().invoke(main, ["dataset", "check", *args])


def assert_clean_exit(result, code: int):
    assert result.exit_code == code, result.output
    assert "unexpected" not in result.output  # the CLI's message for a bug
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_hostile_files_in_one_subset(tmp_path):
    sub = tmp_path / "10_x y"
    sub.mkdir()
    (sub / "random bytes.jpg").write_bytes(os.urandom(4096))
    truncate(solid(tmp_path / "full.png", size=(640, 640)), sub / "trunc.png", 0.5)
    (sub / "zero.webp").write_bytes(b"")
    os.symlink("loop.png", sub / "loop.png")
    os.symlink("missing-target.png", sub / "dangling.png")
    png_header_only(sub / "huge.png", 30000, 30000)
    solid(sub / "ünïcødé name ☃.png")
    caption(sub / "ünïcødé name ☃.txt", b"\xff\xfe\x00bad utf8 \xc3\x28")
    (sub / "dir.png").mkdir()  # a folder with an image name
    os.mkfifo(sub / "pipe.png")  # reading it would block forever
    solid(sub / "piped.png")
    os.mkfifo(sub / "piped.txt")
    result = run_check(str(tmp_path), "--caption-ext", ".txt", "--json")
    assert_clean_exit(result, 1)
    import json

    found = {(f["code"], Path(f["file"]).name) for f in json.loads(result.output)["findings"]}
    assert {
        ("not-an-image", "random bytes.jpg"),
        ("truncated", "trunc.png"),
        ("empty-file", "zero.webp"),
        ("unreadable", "loop.png"),
        ("unreadable", "dangling.png"),
        ("unreadable", "pipe.png"),
        ("unreadable", "piped.txt"),
        ("decompression-bomb", "huge.png"),
        ("caption-not-utf8", "ünïcødé name ☃.txt"),
    } <= found
    deep = run_check(str(tmp_path), "--deep")
    assert_clean_exit(deep, 1)


def test_a_real_decompression_bomb_is_refused_without_decoding(tmp_path):
    # a structurally complete PNG (IHDR, IDAT, IEND) claiming 30000x30000
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    data += chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    for deep in (False, True):
        probe = probe_image(str(path), deep=deep)
        assert probe.error == "decompression-bomb"
        assert (probe.width, probe.height) == (30000, 30000)


def test_empty_folder(tmp_path):
    result = run_check(str(tmp_path))
    assert_clean_exit(result, 1)
    assert "no-images" in result.output or "no image" in result.output


def test_file_instead_of_folder(tmp_path):
    f = solid(tmp_path / "a.png")
    result = run_check(str(f))
    assert_clean_exit(result, 1)
    assert result.output.startswith("error: ") and "a.png" in result.output
    assert "got a file" in result.output


def test_missing_path(tmp_path):
    result = run_check(str(tmp_path / "nope"))
    assert_clean_exit(result, 1)
    assert "not found" in result.output


def test_unlistable_subset_folder(tmp_path, monkeypatch):
    import kohyagen.dataset.scan as scan_mod

    solid(tmp_path / "5_locked" / "a.png")
    solid(tmp_path / "5_ok" / "b.png")
    real = scan_mod.os.scandir

    def scandir(path):
        if str(path).endswith("5_locked"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(scan_mod.os, "scandir", scandir)
    result = run_check(str(tmp_path), "--json")
    assert_clean_exit(result, 1)
    import json

    found = {(f["code"], Path(f["file"]).name) for f in json.loads(result.output)["findings"]}
    assert ("unreadable", "5_locked") in found


def test_dot_files_are_skipped_like_kohya_does(tmp_path):
    solid(tmp_path / "5_x" / "a.png")
    (tmp_path / "5_x" / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    report_codes = {f.code for f in check_dataset(tmp_path).findings}
    assert report_codes <= {"too-few-images", "no-captions"}


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    im = Image.effect_noise((96, 80), 60).convert("RGB")
    im.save(buf, fmt)
    return buf.getvalue()


ENCODED = {fmt: _encoded(fmt) for fmt in ("JPEG", "PNG", "WEBP", "BMP")}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fmt=st.sampled_from(sorted(ENCODED)), cut=st.floats(0.0, 0.999))
def test_any_cut_short_image_is_an_error_without_decoding(tmp_path, fmt, cut):
    data = ENCODED[fmt]
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: int(len(data) * cut)])
    probe = probe_image(str(path))
    assert probe.error in ("truncated", "not-an-image", "empty-file"), (fmt, cut, probe)


@pytest.mark.parametrize("fmt", sorted(ENCODED))
def test_complete_images_pass_the_tail_test(fmt):
    assert completeness_problem(ENCODED[fmt], fmt) is None


def test_jpeg_with_trailing_data_after_eoi_is_complete(tmp_path):
    # motion photos and some cameras append data after the end-of-image marker
    data = ENCODED["JPEG"] + b"\x00\x00ftypmp42" + os.urandom(500)
    assert completeness_problem(data, "JPEG") is None


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2048), ext=st.sampled_from([".jpg", ".png", ".webp", ".bmp"]))
def test_random_bytes_never_raise(tmp_path, data, ext):
    path = tmp_path / f"r{ext}"
    path.write_bytes(data)
    for deep in (False, True):
        probe = probe_image(str(path), deep=deep, perceptual=True)
        assert probe.error is not None or (probe.width > 0 and probe.height > 0)
