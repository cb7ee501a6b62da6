"""Container completeness: whether a file's structure runs to its end (JPEG markers up to
the scan and an EOI after it, PNG chunks up to IEND, the RIFF size of WebP, the
pixel-array size of BMP, GIF's trailer), and the size a header claims.

Separate from the probe because these are byte-level walks of each format's container,
with no Pillow in them: the probe asks them about a file Pillow has opened (or refused).
"""

from __future__ import annotations

import struct

from kohyagen.dataset.file_ends import jpeg_scan_start

__all__ = ["completeness_problem", "header_size"]


def completeness_problem(data: bytes, fmt: str | None) -> str | None:
    """Why the file looks cut short, or None when its structure is complete."""
    checker = _CHECKERS.get(fmt or "")
    if checker is None:
        return None
    try:
        return checker(data)
    except (IndexError, struct.error):
        return "the file ends inside its header"


def _jpeg_problem(data: bytes) -> str | None:
    scan = jpeg_scan_start(data)
    if scan is None:
        return "no image data (SOS marker) before the end of the file"
    # Entropy-coded data never holds FF D9 (a data FF is followed by 00), so the end-of-image
    # marker must come after the first scan; anything after it (camera trailers, motion
    # photo video) is ignored by decoders.
    if data.rfind(b"\xff\xd9") < scan:
        return "JPEG has no end-of-image marker (FF D9): the file is cut short"
    return None


def _png_problem(data: bytes) -> str | None:
    # past the 8-byte signature; each chunk is length (4), type (4), data and CRC (4)
    pos, n = 8, len(data)
    while pos + 8 <= n:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            return f"PNG chunk {kind.decode('latin-1')} runs past the end of the file: cut short"
        if kind == b"IEND":
            return None
        pos = end
    return "PNG has no IEND chunk: the file is cut short"


def _webp_problem(data: bytes) -> str | None:
    # the RIFF size counts the bytes after its own 8-byte header ("RIFF" and the size)
    (riff_size,) = struct.unpack("<I", data[4:8])
    if len(data) < riff_size + 8:
        return f"WebP declares {riff_size + 8} bytes but the file has {len(data)}: cut short"
    return None


def _bmp_problem(data: bytes) -> str | None:
    (offset,) = struct.unpack("<I", data[10:14])
    (header_len,) = struct.unpack("<I", data[14:18])
    if header_len < 40:
        return None  # OS/2 core header: rare, let the decoder judge
    width, height, _planes, bpp, compression = struct.unpack("<iiHHI", data[18:34])
    if compression not in (0, 3):  # RLE and embedded JPEG/PNG have no fixed size
        return None
    stride = ((bpp * abs(width) + 31) // 32) * 4
    need = offset + stride * abs(height)
    if len(data) < need:
        return f"BMP pixel data needs {need} bytes but the file has {len(data)}: cut short"
    return None


def _gif_problem(data: bytes) -> str | None:
    if not data.rstrip(b"\x00").endswith(b";"):
        return "GIF has no trailer byte: the file is cut short"
    return None


_CHECKERS = {
    "JPEG": _jpeg_problem,
    "MPO": _jpeg_problem,
    "PNG": _png_problem,
    "WEBP": _webp_problem,
    "BMP": _bmp_problem,
    "GIF": _gif_problem,
}


def header_size(data: bytes) -> tuple[int, int]:
    """Width and height read straight from a PNG, JPEG or WebP header; (0, 0) if unknown.

    Used when Pillow refuses to open the file (decompression-bomb limit) so the finding can
    still say how large the image claims to be.
    """
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data.startswith(b"\xff\xd8"):
            return _jpeg_sof_size(data)
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            kind = data[12:16]
            if kind == b"VP8X":  # extended: 24-bit canvas size minus one
                w = int.from_bytes(data[24:27], "little") + 1
                h = int.from_bytes(data[27:30], "little") + 1
                return w, h
            if kind == b"VP8 ":  # lossy: 14-bit sizes after the key-frame start code
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if kind == b"VP8L":  # lossless: two 14-bit sizes minus one after the signature
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    except (struct.error, IndexError):
        pass
    return 0, 0


def _jpeg_sof_size(data: bytes) -> tuple[int, int]:
    pos, n = 2, len(data)
    while pos + 9 <= n and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0x01, 0xD8, 0xFF) or 0xD0 <= marker <= 0xD7:
            pos += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return w, h
        pos += 2 + length
    return 0, 0
