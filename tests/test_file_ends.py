"""The default probe reads a file's two ends (kohyagen.dataset.file_ends) and finds what
the whole-file probe finds: the same facts for complete files, the same damage otherwise."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from kohyagen.dataset import file_ends, images
from kohyagen.dataset.images import TRUNCATED, probe_image


def _noisy(fmt: str, side: int = 400, **options) -> bytes:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **options)
    return buf.getvalue()


def _with_comment(jpeg: bytes, size: int) -> bytes:
    """A COM segment of `size` bytes right after SOI: a header longer than the head."""
    body = b"c" * (size - 2)
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", size) + body + jpeg[2:]


def _whole(monkeypatch, path) -> images.ImageProbe:
    with monkeypatch.context() as m:
        m.setattr(images, "read_ends", lambda _p: None)
        return probe_image(str(path), digest=False)


def _whole_reads(monkeypatch, path) -> tuple[images.ImageProbe, int]:
    """The probe, and how many times it read the whole file."""
    calls = []
    real = images._read
    with monkeypatch.context() as m:
        m.setattr(images, "_read", lambda *a, **k: calls.append(a) or real(*a, **k))
        return probe_image(str(path), digest=False), len(calls)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(lambda: _noisy("JPEG", quality=90), id="jpeg"),
        pytest.param(lambda: _with_comment(_noisy("JPEG", quality=90), 60000), id="long-header"),
        pytest.param(lambda: _noisy("GIF"), id="gif"),
        pytest.param(lambda: _noisy("BMP"), id="bmp"),
    ],
)
def test_complete_files_are_probed_from_their_ends_alone(monkeypatch, tmp_path, data):
    path = tmp_path / "x.img"
    path.write_bytes(data())
    assert path.stat().st_size > file_ends.HEAD + file_ends.TAIL
    quick, whole_reads = _whole_reads(monkeypatch, path)
    assert quick.error is None and quick.width == 400 and whole_reads == 0
    assert quick == _whole(monkeypatch, path)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "GIF", "BMP", "PNG"])
def test_cut_files_are_found_truncated_as_before(monkeypatch, tmp_path, fmt):
    path = tmp_path / "cut.img"
    data = _noisy(fmt)
    path.write_bytes(data[: len(data) - 3000])
    probe = probe_image(str(path), digest=False)
    assert probe == _whole(monkeypatch, path)
    # a cut WebP is one Pillow cannot open at all (not-an-image), with either read
    assert probe.error == (TRUNCATED if fmt != "WEBP" else images.NOT_AN_IMAGE), probe


def test_a_trailer_after_the_end_marker_is_not_damage(monkeypatch, tmp_path):
    """A motion photo: a video after the JPEG's FF D9; the tail has no marker, so the
    whole file is read, and it is complete."""
    path = tmp_path / "motion.jpg"
    path.write_bytes(_noisy("JPEG") + b"\x00video" * 50000)
    probe = probe_image(str(path), digest=False)
    assert probe.error is None and probe.format == "JPEG"


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_png_and_webp_are_read_whole_once(monkeypatch, tmp_path, fmt):
    """PNG's chunks are all walked, and Pillow reads a whole WebP to open it: the ends
    are not read first for nothing."""
    path = tmp_path / "x.img"
    path.write_bytes(_noisy(fmt))
    assert file_ends.read_ends(str(path)) is None
    probe, whole_reads = _whole_reads(monkeypatch, path)
    assert probe.error is None and whole_reads == 1


def test_jpeg_end_marker_before_the_scan_is_truncation(tmp_path):
    """FF D9 only inside the header (a comment), none after the scan: cut short."""
    jpeg = _noisy("JPEG")
    scan = file_ends.jpeg_scan_start(jpeg)
    assert scan is not None
    cut = jpeg[: len(jpeg) - 2]  # the real end marker gone
    ends = file_ends.FileEnds(cut[: scan + 10], b"\x00" * file_ends.TAIL, len(cut), scan)
    assert not file_ends.ends_complete(ends, "JPEG")
