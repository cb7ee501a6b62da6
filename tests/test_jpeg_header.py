"""The JPEG header reader (kohyagen.dataset.jpeg_header) against Pillow itself.

The default probe answers plain JPEGs without Pillow; every case here probes a file
twice, once as users get it and once with the reader switched off (Pillow's answer),
and wants the two ImageProbes equal: on files Pillow writes, on hand-made EXIF blocks,
and on a few hundred header mutations. The reader may decline (Pillow then answers) but
never answer differently.
"""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kohyagen.dataset import file_ends, jpeg_header
from kohyagen.dataset.images import probe_image


def _noise(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    bands = {"RGB": 3, "L": 1, "CMYK": 4}[mode]
    arr = rng.integers(0, 256, (h, w, bands) if bands > 1 else (h, w), dtype=np.uint8)
    return Image.fromarray(arr, mode)


def _jpeg(mode: str = "RGB", **save) -> bytes:
    buf = io.BytesIO()
    # noise at high quality: well past the head and tail the default probe reads
    _noise(320, 240, mode).save(buf, "JPEG", quality=95, **save)
    return buf.getvalue()


def _exif_block(entries: list[tuple[int, int, int, bytes]], order: str = "<", *,
                prefix: bytes = b"Exif\0\0", extra: bytes = b"") -> bytes:  # fmt: skip
    """An APP1 EXIF body: a TIFF header and one directory of (tag, type, count, value4)."""
    magic = b"II" if order == "<" else b"MM"
    tiff = magic + struct.pack(order + "HI", 42, 8) + struct.pack(order + "H", len(entries))
    for tag, kind, count, value in entries:
        tiff += struct.pack(order + "HHI", tag, kind, count) + value.ljust(4, b"\0")
    return prefix + tiff + struct.pack(order + "I", 0) + extra


def _with_app(data: bytes, marker: int, body: bytes) -> bytes:
    """data with one more APPn segment right after SOI."""
    return data[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body + data[2:]


def _both(tmp_path: Path, data: bytes, monkeypatch: pytest.MonkeyPatch, name: str = "a.jpg"):
    path = tmp_path / name
    path.write_bytes(data)
    fast = probe_image(str(path), digest=False)
    with monkeypatch.context() as m:
        m.setattr(file_ends, "read_facts", lambda head: None)
        pillow = probe_image(str(path), digest=False)
    return fast, pillow


def _short(value: int, order: str = "<") -> bytes:
    return struct.pack(order + "H", value)


PLAIN = {
    "baseline": lambda: _jpeg(),
    "progressive": lambda: _jpeg(progressive=True),
    "optimized": lambda: _jpeg(optimize=True),
    "grey": lambda: _jpeg("L"),
    "cmyk": lambda: _jpeg("CMYK"),
    "4:4:4": lambda: _jpeg(subsampling=0),
    "comment": lambda: _jpeg(comment=b"made by hand"),
    "icc": lambda: _jpeg(icc_profile=b"\0" * 3000),
    "dpi": lambda: _jpeg(dpi=(300, 300)),
    "restart": lambda: _jpeg(restart_marker_blocks=4),
}


@pytest.mark.parametrize("kind", sorted(PLAIN))
def test_plain_jpegs_are_read_without_pillow(kind, tmp_path, monkeypatch):
    data = PLAIN[kind]()
    assert jpeg_header.read_facts(data) is not None, "the reader declined a plain JPEG"
    fast, pillow = _both(tmp_path, data, monkeypatch)
    assert fast == pillow
    assert fast.error is None and fast.format == "JPEG"

    # and the fast path really leaves Pillow alone
    def refuse(*args, **kwargs):
        raise AssertionError("Pillow opened a plain JPEG")

    monkeypatch.setattr(Image, "open", refuse)
    assert probe_image(str(tmp_path / "a.jpg"), digest=False) == fast


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("value", [0, 1, 3, 6, 8, 9, 0xFFFF])
def test_exif_orientation_as_pillow_reads_it(order, value, tmp_path, monkeypatch):
    entries = [(0x010F, 2, 4, b"Cam\0"), (0x0112, 3, 1, _short(value, order))]
    data = _with_app(_jpeg(), 0xE1, _exif_block(entries, order))
    fast, pillow = _both(tmp_path, data, monkeypatch)
    assert fast == pillow
    assert fast.orientation == (value if 1 <= value <= 8 else 1)


def test_pillow_written_exif(tmp_path, monkeypatch):
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "a camera with a long name to push the value out of the entry"
    fast, pillow = _both(tmp_path, _jpeg(exif=exif.tobytes()), monkeypatch)
    assert fast == pillow and fast.orientation == 6


ODD_EXIF = {
    "long type": [(0x0112, 4, 1, struct.pack("<I", 6))],
    "two values": [(0x0112, 3, 2, _short(6) + _short(3))],
    "twice": [(0x0112, 3, 1, _short(6)), (0x0112, 3, 1, _short(3))],
    "value past the end before it": [
        (0x010F, 2, 40, struct.pack("<I", 5000)),
        (0x0112, 3, 1, _short(6)),
    ],
    # Pillow reads past the end there and stops reading the directory
    "value cut short before it": [(0x010F, 2, 8, struct.pack("<I", 35)), (0x0112, 3, 1, _short(6))],
    "unknown type before it": [(0x9999, 99, 1000, b"\0\0\0\0"), (0x0112, 3, 1, _short(6))],
    "none": [(0x010F, 2, 4, b"Cam\0")],
    "empty": [],
}


@pytest.mark.parametrize("kind", sorted(ODD_EXIF))
def test_odd_exif_directories(kind, tmp_path, monkeypatch):
    data = _with_app(_jpeg(), 0xE1, _exif_block(ODD_EXIF[kind]))
    fast, pillow = _both(tmp_path, data, monkeypatch)
    assert fast == pillow


@pytest.mark.parametrize(
    "body",
    [
        b"Exif\0\0",  # no TIFF at all
        b"Exif\0\0XX*\0\x08\0\0\0",  # no byte order
        b"Exif\0\0II*\0\xff\xff\0\0",  # directory offset past the end
        b"Exif\0\0II*\0\x08\0\0\0\x05\0",  # a directory cut short
        _exif_block([(0x0112, 3, 1, _short(6))], prefix=b"Exif\0\0Exif\0\0"),
        _exif_block([(0x0112, 3, 1, _short(6))], ">"),
    ],
)
def test_broken_exif_blocks(body, tmp_path, monkeypatch):
    fast, pillow = _both(tmp_path, _with_app(_jpeg(), 0xE1, body), monkeypatch)
    assert fast == pillow


def test_two_exif_segments_are_left_to_pillow(tmp_path, monkeypatch):
    block = _exif_block([(0x0112, 3, 1, _short(6))])
    data = _with_app(_with_app(_jpeg(), 0xE1, block), 0xE1, block)
    assert jpeg_header.read_facts(data) is None
    fast, pillow = _both(tmp_path, data, monkeypatch)
    assert fast == pillow


def test_mpo_is_left_to_pillow(tmp_path, monkeypatch):
    buf = io.BytesIO()
    frames = [_noise(320, 240, seed=s) for s in (1, 2)]
    frames[0].save(buf, "MPO", save_all=True, append_images=frames[1:], quality=95)
    data = buf.getvalue()
    assert jpeg_header.read_facts(data) is None
    fast, pillow = _both(tmp_path, data, monkeypatch)
    assert fast == pillow and fast.format == "MPO"


def _sof_offset(data: bytes) -> int:
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at > 0:
            return at
    raise AssertionError("no SOF")


@pytest.mark.parametrize(
    "patch",
    ["12-bit", "2 components", "zero width", "second SOF", "short DQT", "junk", "fill byte",
     "short JFIF", "short Adobe", "short ICC", "TEM marker", "huge"],
)  # fmt: skip
def test_headers_pillow_judges(patch, tmp_path, monkeypatch):
    data = bytearray(_jpeg())
    sof = _sof_offset(bytes(data))
    if patch == "12-bit":
        data[sof + 4] = 12
    elif patch == "2 components":
        data[sof + 9] = 2
    elif patch == "zero width":
        data[sof + 7 : sof + 9] = b"\0\0"
    elif patch == "second SOF":
        seg_len = struct.unpack(">H", data[sof + 2 : sof + 4])[0]
        data[sof:sof] = data[sof : sof + 2 + seg_len]
    elif patch == "short DQT":
        dqt = data.find(b"\xff\xdb")
        data[dqt + 2 : dqt + 4] = struct.pack(">H", 40)
    elif patch == "junk":
        data[sof:sof] = b"\x00\x01"
    elif patch == "fill byte":
        data[sof:sof] = b"\xff"
    elif patch == "short JFIF":
        data = bytearray(_with_app(bytes(data), 0xE0, b"JFIF\0"))
    elif patch == "short Adobe":
        data = bytearray(_with_app(bytes(data), 0xEE, b"Adobe"))
    elif patch == "short ICC":
        data = bytearray(_with_app(bytes(data), 0xE2, b"ICC_PROFILE\0\1"))
    elif patch == "TEM marker":
        data[sof:sof] = b"\xff\x01"
    elif patch == "huge":
        data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    data = bytes(data)
    assert jpeg_header.read_facts(data) is None
    fast, pillow = _both(tmp_path, data, monkeypatch)
    assert fast == pillow


def _photoshop(blocks: bytes) -> bytes:
    return b"Photoshop 3.0\0" + blocks


PHOTOSHOP = {
    "resolution block": _photoshop(
        b"8BIM\x03\xed\x00\x00"
        + struct.pack(">I", 16)
        + struct.pack(">IHHIHH", 72 << 16, 1, 1, 72 << 16, 1, 1)
    ),
    "cut at the name length": _photoshop(b"8BIM\x04\x04"),
    "cut in the code": _photoshop(b"8BIM\x04"),
    "cut in the size": _photoshop(b"8BIM\x04\x04\x00\x00\x00"),
    "second block cut at the name": _photoshop(
        b"8BIM\x04\x04\x00\x00" + struct.pack(">I", 2) + b"ab" + b"8BIM\x04\x04"
    ),
    "not a block": _photoshop(b"XXXX"),
}


@pytest.mark.parametrize("kind", sorted(PHOTOSHOP))
def test_photoshop_segments_as_pillow_reads_them(kind, tmp_path, monkeypatch):
    fast, pillow = _both(tmp_path, _with_app(_jpeg(), 0xED, PHOTOSHOP[kind]), monkeypatch)
    assert fast == pillow


@pytest.mark.parametrize("extra", [1, 2, 3])
def test_a_frame_header_cut_mid_component_is_pillow_s_to_judge(extra, tmp_path, monkeypatch):
    data = bytearray(_jpeg("L"))
    sof = _sof_offset(bytes(data))
    (length,) = struct.unpack(">H", data[sof + 2 : sof + 4])
    end = sof + 2 + length
    data[end:end] = b"\x01" * extra  # bytes after the one component's three
    data[sof + 2 : sof + 4] = struct.pack(">H", length + extra)
    fast, pillow = _both(tmp_path, bytes(data), monkeypatch)
    assert fast == pillow
    assert (jpeg_header.read_facts(bytes(data)) is None) == (extra % 3 != 0)


def test_mutated_headers_agree_with_pillow(tmp_path, monkeypatch):
    """Random byte changes before the first scan: the reader declines or agrees."""
    rng = random.Random(15)
    seeds = [
        _jpeg(),
        _jpeg("L", progressive=True),
        _with_app(
            _jpeg(), 0xE1, _exif_block([(0x010F, 2, 4, b"Cam\0"), (0x0112, 3, 1, _short(8))])
        ),
    ]
    answered = 0
    for i in range(300):
        data = bytearray(rng.choice(seeds))
        scan = file_ends.jpeg_scan_start(bytes(data))
        assert scan is not None
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(2, scan)
            data[at] = rng.choice([0x00, 0x01, 0x02, 0x08, 0x0C, 0xFF, 0xC0, 0xDA, 0xE1,
                                   rng.randrange(256)])  # fmt: skip
        data = bytes(data)
        answered += jpeg_header.read_facts(data) is not None
        fast, pillow = _both(tmp_path, data, monkeypatch, name=f"m{i}.jpg")
        assert fast == pillow, f"mutant {i}"
    # most mutants land in pixel tables or comments, where the answer stays the reader's
    assert answered > 100


def test_probe_of_a_plain_jpeg_without_pillow_imported(tmp_path):
    """The fast path's decompression-bomb limit is Pillow's default while Pillow is not
    imported, and Pillow's own value once it is."""
    assert Image.MAX_IMAGE_PIXELS == jpeg_header._DEFAULT_MAX_PIXELS  # Pillow's own default
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 320 * 240 - 1
        assert jpeg_header.read_facts(_jpeg()) is None  # past the limit: Pillow warns
        Image.MAX_IMAGE_PIXELS = None
        assert jpeg_header.read_facts(_jpeg()) is None  # no limit: leave it to Pillow
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    assert jpeg_header.read_facts(_jpeg()) is not None
