"""A JPEG's header facts (size, mode, EXIF orientation) without Pillow, for the common file.

Opening a JPEG with Pillow only to read its header was half of a default `dataset check`
(benchmarks/dataset_check.py: 3,000 768-px JPEGs). Most JPEGs are plain: SOI, a few APPn,
COM, DQT and DHT segments, one 8-bit SOF, SOS. For those this module returns exactly what
Pillow 11-13 reports (format, size, mode, the EXIF orientation images._orientation reads).
Anything else (junk between segments, fill bytes, markers Pillow rejects, a segment
Pillow's handlers would choke on, more than one SOF or EXIF segment, an MPO index, a
12-bit frame, a size past the decompression-bomb limit, an orientation entry that is not
one SHORT) returns None, and the caller asks Pillow: the fast path only answers where the
answer cannot differ. tests/test_jpeg_header.py holds both to the same result on
generated and mutated files.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

# Pillow's JPEG marker handlers that keep to the header: SOF (less DHP, which Pillow
# also sends through its SOF handler but no encoder writes), DHT, DRI and DQT
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SKIPPED = frozenset({0xC4, 0xDD})  # DHT, DRI: Pillow reads past them
_DQT, _SOS, _COM, _APP1, _APP2 = 0xDB, 0xDA, 0xFE, 0xE1, 0xE2
_MODES = {1: "L", 3: "RGB", 4: "CMYK"}
# Pillow's default Image.MAX_IMAGE_PIXELS, used while Pillow is not imported yet (the
# limit can only have been changed by code that imported it)
_DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class JpegFacts:
    width: int
    height: int
    mode: str
    orientation: int  # 1..8, 1 also where the EXIF has none or an out-of-range one
    scan: int  # offset of the first scan's entropy-coded data


def read_facts(head: bytes) -> JpegFacts | None:
    """The header facts of a JPEG whose markers up to the first scan lie in head; None
    when Pillow must decide (see the module docstring)."""
    try:
        return _walk(head)
    except (IndexError, struct.error):
        return None


def _walk(data: bytes) -> JpegFacts | None:
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    pos, end = 2, len(data)
    sof: bytes | None = None
    exif: bytes | None = None
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None  # junk between segments: Pillow skips it, let it
        marker = data[pos + 1]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        body_end = pos + 2 + length
        if length < 2 or body_end > end:
            return None
        body = data[pos + 4 : body_end]
        if marker == _SOS:
            return _facts(sof, exif, body_end) if sof is not None else None
        if marker in _SOF:
            if sof is not None:
                return None  # Pillow keeps the last frame's facts: rare enough to ask it
            sof = body
        elif marker == _DQT:
            if not _dqt_ok(body):
                return None
        elif 0xE0 <= marker <= 0xEF:
            if not _app_ok(marker, body):
                return None
            if marker == _APP1 and body.startswith(b"Exif\0\0"):
                if exif is not None:
                    return None  # Pillow joins several EXIF segments into one
                exif = body
        elif marker not in _SKIPPED and marker != _COM:
            return None  # fill bytes, RSTn, DNL, JPGn, TEM...: Pillow's own rules apply
        pos = body_end
    return None


def _facts(sof: bytes, exif: bytes | None, scan: int) -> JpegFacts | None:
    if len(sof) < 6 or sof[0] != 8 or (len(sof) - 6) % 3:
        # Pillow raises on other precisions and on a component table cut mid-entry; its
        # message is the one to show
        return None
    height, width = struct.unpack_from(">HH", sof, 1)
    mode = _MODES.get(sof[5])
    if mode is None or width == 0 or height == 0 or width * height > _max_pixels():
        return None
    orientation = _orientation(exif) if exif is not None else 1
    if orientation is None:
        return None
    return JpegFacts(width, height, mode, orientation, scan)


def _max_pixels() -> int:
    pil = sys.modules.get("PIL.Image")
    limit = getattr(pil, "MAX_IMAGE_PIXELS", _DEFAULT_MAX_PIXELS) if pil else _DEFAULT_MAX_PIXELS
    # no limit (None) also means no oversized warning, which the caller would need to know
    return limit if isinstance(limit, int) else -1


def _dqt_ok(body: bytes) -> bool:
    """Pillow raises on a quantization table shorter than its precision says."""
    pos = 0
    while pos < len(body):
        size = 1 + (64 if body[pos] < 16 else 128)
        if len(body) - pos < size:
            return False
        pos += size
    return True


def _app_ok(marker: int, body: bytes) -> bool:
    """False for the application segments whose Pillow handler would fail or change the
    format: a short JFIF or Adobe segment, a short ICC chunk, an MPO index."""
    if marker == 0xE0 and body.startswith(b"JFIF") and len(body) < 7:
        return False
    if marker == 0xEE and body.startswith(b"Adobe") and len(body) < 7:
        return False
    if marker == _APP2 and body.startswith(b"ICC_PROFILE\0") and len(body) < 14:
        return False
    if marker == 0xED and body.startswith(b"Photoshop 3.0\0") and not _photoshop_ok(body):
        return False
    return not (marker == _APP2 and body.startswith(b"MPF\0"))


def _photoshop_ok(body: bytes) -> bool:
    """False where Pillow's walk of Photoshop's resource blocks fails: it stops quietly
    at a block cut short, except where the cut falls on a block's name length (an
    IndexError it does not catch, and the file does not open)."""
    pos = 14
    while body[pos : pos + 4] == b"8BIM":
        pos += 6  # the signature and the resource code
        if pos > len(body):
            return True  # the code itself is cut: Pillow's struct.error, caught
        if pos == len(body):
            return False  # no byte for the name's length: Pillow's IndexError
        pos += 1 + body[pos]
        pos += pos & 1
        if pos + 4 > len(body):
            return True
        (size,) = struct.unpack_from(">I", body, pos)
        pos += 4 + size
        pos += pos & 1
    return True


def _orientation(exif: bytes) -> int | None:
    """The orientation Pillow's Exif().load(raw).get(0x0112, 1) gives, mapped as
    images._orientation maps it; None when this reader cannot be sure of it."""
    tiff = exif[6:]
    if len(tiff) < 8:
        return None
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or struct.unpack_from(order + "H", tiff, 2)[0] != 42:
        return None
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd < 8 or ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    if ifd + 2 + 12 * count + 4 > len(tiff):
        return None  # a directory cut short: Pillow keeps part of it, with a warning
    found: int | None = None
    for i in range(count):
        at = ifd + 2 + 12 * i
        tag, kind, n = struct.unpack_from(order + "HHI", tiff, at)
        if tag == _ORIENTATION:
            if found is not None or kind != 3 or n != 1:
                return None
            (found,) = struct.unpack_from(order + "H", tiff, at + 8)
        elif found is None and _unreadable_value(tiff, order, at, kind, n):
            return None  # Pillow stops reading the directory there, before the orientation
    if found is None:
        return 1
    return found if 1 <= found <= 8 else 1


# bytes per value of the TIFF types Pillow reads; it skips entries of any other type
_UNIT = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}


def _unreadable_value(tiff: bytes, order: str, at: int, kind: int, n: int) -> bool:
    """True when an entry's value lies past the end of the EXIF block, where Pillow's
    directory reader gives up on the entries that follow."""
    size = n * _UNIT.get(kind, 0)
    if size <= 4:
        return False
    (offset,) = struct.unpack_from(order + "I", tiff, at + 8)
    return offset + size > len(tiff)
