"""The two ends of an image file: enough for a default check, without reading the middle.

A default check needs the header (Pillow's size, mode, format, EXIF) and proof that the
file is not cut short, which for most formats is at its end: JPEG's end-of-image marker,
GIF's trailer, the pixel-array size of BMP (the file size alone). Reading the whole file instead cost a quarter of a default check on 768-px
JPEGs in a new process (the copy, and the page faults of a fresh buffer per image;
benchmarks/dataset_check.py). The ends answer only "complete"; any doubt (a header
longer than the head, no marker in the tail; PNG and WebP, read whole from the start)
sends the caller back to the whole-file check, so both paths find the same problems.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

from kohyagen import safe_io
from kohyagen.dataset.jpeg_header import JpegFacts, read_facts

# The head covers the headers of web and generated images; a JPEG whose markers run
# past it (a camera's EXIF thumbnail, a big ICC profile) gets one more read.
HEAD = 16 * 1024
MORE = 240 * 1024
TAIL = 1024
_JPEG = b"\xff\xd8"
# how much of the head goes into ends_key: where two photos' bytes already differ
KEY_HEAD = 4096
# PNG's chunks must all be walked, and Pillow reads a whole WebP to open it: these are
# read whole at once rather than their ends first
_WHOLE = (b"\x89PNG\r\n\x1a\n", b"RIFF")


@dataclass(frozen=True)
class FileEnds:
    head: bytes  # the first bytes, at least up to a JPEG's first scan
    tail: bytes  # the last TAIL bytes
    size: int  # the file's size (fstat)
    scan: int | None = None  # where a JPEG's first scan starts (jpeg_scan_start of head)
    jpeg: JpegFacts | None = None  # a plain JPEG's header facts (jpeg_header), Pillow unneeded


def ends_key(head: bytes, tail: bytes) -> int:
    """A checksum of a file's first KEY_HEAD and last TAIL bytes: two files of one size
    whose keys differ cannot be byte-identical, so only files with equal keys need a
    content hash (kohyagen.dataset.digests). Callers pass the same two slices of a
    file however they read it."""
    return zlib.crc32(tail, zlib.crc32(head[:KEY_HEAD]))


def jpeg_scan_start(data: bytes) -> int | None:
    """Offset of a JPEG's entropy-coded data (after the first SOS segment); None when the
    markers before it do not fit in data or are not markers."""
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker == 0xDA:
            return pos + 2 + length
        pos += 2 + length
    return None


def read_ends(path: str) -> FileEnds | None:
    """Head and tail of a regular file; None when the whole file is as cheap to read (it
    is small) or cannot be read (the caller's whole-file read says why)."""
    try:
        fd, st = safe_io.open_fd(path)
    except OSError:
        return None
    try:
        size = st.st_size
        if size <= HEAD + TAIL:
            return None
        head = os.read(fd, HEAD)
        if head.startswith(_WHOLE):
            return None
        jpeg, scan = _jpeg_head(head)
        if head.startswith(_JPEG) and scan is None:
            head += os.read(fd, MORE)
            jpeg, scan = _jpeg_head(head)
        tail = os.pread(fd, TAIL, size - TAIL)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(tail) != TAIL:  # the file changed size under us: let the whole read judge
        return None
    return FileEnds(head, tail, size, scan, jpeg)


def _jpeg_head(head: bytes) -> tuple[JpegFacts | None, int | None]:
    """(a plain JPEG's facts, where its first scan starts); (None, None) for other files."""
    if not head.startswith(_JPEG):
        return None, None
    facts = read_facts(head)
    return facts, facts.scan if facts else jpeg_scan_start(head)


def ends_complete(ends: FileEnds, fmt: str | None) -> bool:
    """True when the ends prove the file complete as the whole-file check
    (containers.completeness_problem) would; False means "read it all and look"."""
    try:
        if fmt in ("JPEG", "MPO"):
            scan = ends.scan
            eoi = ends.tail.rfind(b"\xff\xd9")
            # the whole-file check wants the last FF D9 after the first scan
            return scan is not None and eoi >= 0 and ends.size - TAIL + eoi >= scan
        if fmt == "GIF":
            trimmed = ends.tail.rstrip(b"\x00")
            return trimmed.endswith(b";")
        if fmt == "BMP":
            return _bmp_complete(ends)
    except (IndexError, struct.error):
        return False
    return fmt is not None and fmt not in _WALKED


# Formats whose completeness the whole-file check walks (containers._CHECKERS); any other
# format has no structure check there, so the ends need not prove anything either.
_WALKED = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF"})


def _bmp_complete(ends: FileEnds) -> bool:
    data = ends.head
    (offset,) = struct.unpack("<I", data[10:14])
    (header_len,) = struct.unpack("<I", data[14:18])
    if header_len < 40:
        return True  # OS/2 core header: the whole-file check does not judge it either
    width, height, _planes, bpp, compression = struct.unpack("<iiHHI", data[18:34])
    if compression not in (0, 3):
        return True
    stride = ((bpp * abs(width) + 31) // 32) * 4
    return ends.size >= offset + stride * abs(height)
