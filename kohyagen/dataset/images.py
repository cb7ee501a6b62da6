"""Per-image probing: what kohya will see when it opens a file, read as cheaply as possible.

The default probe reads the file once, hashes the bytes, lets Pillow parse only the
header (size, mode, format, EXIF; no pixel decode) and checks that the file is complete
by walking its container structure (JPEG markers up to the scan and an EOI after it, PNG
chunks up to IEND, the RIFF size of WebP, the pixel-array size of BMP, GIF's trailer).
The deep probe also decodes every pixel, which is what catches damage inside the data,
and computes the perceptual hash from the decoded pixels. The container walks live in
containers, the perceptual hash in perceptual.

probe_image never raises: every failure becomes a field of the returned ImageProbe, so
a single bad file cannot stop a check of thousands.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

from kohyagen import safe_io
from kohyagen.dataset.containers import completeness_problem, header_size
from kohyagen.dataset.file_ends import TAIL, FileEnds, ends_complete, ends_key, read_ends
from kohyagen.dataset.perceptual import signature, signature_cheap

# Files above this are hashed in chunks instead of being read into memory at once.
_WHOLE_READ_LIMIT = 256 * 1024 * 1024
_CHUNK = 4 * 1024 * 1024

# Pillow modes with an alpha band (a palette's transparency shows in im.info instead).
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})

# ImageProbe.error values (also the finding codes the dataset check uses for them).
EMPTY_FILE = "empty-file"
UNREADABLE = "unreadable"
NOT_AN_IMAGE = "not-an-image"
TRUNCATED = "truncated"
DECOMPRESSION_BOMB = "decompression-bomb"
DECODE_FAILED = "decode-failed"


@dataclass(frozen=True)
class ImageProbe:
    path: str
    size_bytes: int = 0
    error: str | None = None  # one of the codes above when kohya could not use the file
    detail: str = ""  # the underlying message, for the finding
    format: str | None = None  # Pillow's format name: JPEG, PNG, WEBP, BMP, GIF, ...
    width: int = 0
    height: int = 0
    mode: str | None = None
    orientation: int = 1  # EXIF orientation; 1 means upright
    has_alpha: bool = False
    alpha_used: bool | None = None  # None: not decoded, so unknown
    oversized: bool = False  # above Pillow's decompression-bomb warning limit
    digest: str | None = None  # content hash of the bytes
    ends_key: int | None = None  # file_ends.ends_key: tells files of one size apart cheaply
    dhash: int | None = None  # 64-bit difference hash of the pixels
    tone: tuple[int, int, int] | None = None  # mean colour, to tell flat images apart
    decoded: bool = False


def probe_image(
    path: str, *, deep: bool = False, perceptual: bool = False, digest: bool = True
) -> ImageProbe:
    """Inspect one image file; see the module docstring. Never raises.

    digest=False leaves the content hash out (kohyagen.dataset.digests adds it where a
    duplicate is possible)."""
    try:
        return _probe(path, deep=deep, perceptual=perceptual, digest=digest)
    except MemoryError:
        return ImageProbe(path, error=UNREADABLE, detail="not enough memory to read it")
    except Exception as exc:  # a probe must never stop the whole check
        return ImageProbe(path, error=UNREADABLE, detail=f"{type(exc).__name__}: {exc}")


def _read(path: str, digest: bool = True) -> tuple[bytes, str | None, int]:
    """(bytes to parse, hex digest of the whole file or None, file size)."""
    # a FIFO or device would block or never end (NotRegularFile); kohya could not train
    # on it either. One descriptor, one fstat, one read: no stat before the open, no
    # buffered file object (this runs for every image of a check)
    fd, st = safe_io.open_fd(path)
    try:
        size = st.st_size
        if size <= _WHOLE_READ_LIMIT:
            data = safe_io.read_fd(fd, size, _WHOLE_READ_LIMIT)
            return data, hashlib.sha256(data).hexdigest() if digest else None, len(data)
        hexdigest = None
        if digest:
            hasher = hashlib.sha256()
            while chunk := os.read(fd, _CHUNK):
                hasher.update(chunk)
            os.lseek(fd, 0, os.SEEK_SET)
            hexdigest = hasher.hexdigest()
        data = safe_io.read_fd(fd, _WHOLE_READ_LIMIT, _WHOLE_READ_LIMIT - 1)
        return data[:_WHOLE_READ_LIMIT], hexdigest, size
    finally:
        os.close(fd)


def _probe(path: str, *, deep: bool, perceptual: bool, digest: bool = True) -> ImageProbe:
    if not (deep or perceptual or digest):
        # the default check: the file's two ends, when they are enough (file_ends)
        ends = read_ends(path)
        quick = _probe_ends(path, ends) if ends else None
        if quick is not None:
            return quick
    try:
        data, hexdigest, size = _read(path, digest)
    except OSError as exc:
        return ImageProbe(path, error=UNREADABLE, detail=exc.strerror or str(exc))
    if size == 0:
        return ImageProbe(path, error=EMPTY_FILE, detail="the file is empty (0 bytes)")
    key = ends_key(data, data[-TAIL:]) if hexdigest is None and len(data) == size else None
    probe = _probe_data(path, data, size, hexdigest, deep=deep, perceptual=perceptual, key=key)
    assert probe is not None  # only a probe of the ends leaves the answer open
    return probe


def _probe_ends(path: str, ends: FileEnds) -> ImageProbe | None:
    """The default probe from a file's ends: a plain JPEG's header read here (Pillow's
    parse was half the cost of a default check, jpeg_header), anything else by Pillow."""
    jpeg = ends.jpeg
    key = ends_key(ends.head, ends.tail)
    if jpeg is None:
        return _probe_data(path, ends.head, ends.size, None, ends=ends, key=key)
    if not ends_complete(ends, "JPEG"):
        return None
    return ImageProbe(
        path, size_bytes=ends.size, format="JPEG", width=jpeg.width, height=jpeg.height,
        mode=jpeg.mode, orientation=jpeg.orientation, ends_key=key,
    )  # fmt: skip


def _probe_data(
    path: str,
    data: bytes,
    size: int,
    hexdigest: str | None,
    *,
    deep: bool = False,
    perceptual: bool = False,
    ends: FileEnds | None = None,
    key: int | None = None,
) -> ImageProbe | None:
    """The probe of data (the whole file, or with `ends` its head); None when the ends
    cannot settle it and the whole file must be read."""
    partial = ends is None and len(data) < size
    base: dict[str, Any] = {"path": path, "size_bytes": size, "digest": hexdigest, "ends_key": key}
    opened = _open(data, base)
    if isinstance(opened, ImageProbe):
        # a head too short for the header, or a broken file: the whole-file path says which
        return None if ends is not None else opened
    im, oversized = opened
    fmt = im.format
    width, height = im.size
    mode = im.mode
    has_alpha = mode in ALPHA_MODES or "transparency" in im.info
    facts: dict[str, Any] = {
        **base,
        "format": fmt,
        "width": width,
        "height": height,
        "mode": mode,
        "orientation": _orientation(im),
        "has_alpha": has_alpha,
        "oversized": oversized,
    }
    if width <= 0 or height <= 0:
        return ImageProbe(**facts, error=NOT_AN_IMAGE, detail=f"image size {width}x{height}")
    if ends is not None and not ends_complete(ends, fmt):
        return None
    incomplete = None if partial or ends is not None else completeness_problem(data, fmt)
    if incomplete:
        return ImageProbe(**facts, error=TRUNCATED, detail=incomplete)

    if not deep:
        sig = signature_cheap(im) if perceptual else None
        return ImageProbe(**facts, **_sig_fields(sig))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
    except OSError as exc:
        code = TRUNCATED if "truncated" in str(exc).lower() else DECODE_FAILED
        return ImageProbe(**facts, error=code, detail=str(exc))
    except Exception as exc:
        return ImageProbe(**facts, error=DECODE_FAILED, detail=f"{type(exc).__name__}: {exc}")
    alpha_used = _alpha_used(im) if has_alpha else None
    sig = signature(im) if perceptual else None
    return ImageProbe(**facts, alpha_used=alpha_used, decoded=True, **_sig_fields(sig))


def _open(data: bytes, base: dict[str, Any]) -> tuple[Image.Image, bool] | ImageProbe:
    """Pillow's view of the header and whether it passed the decompression-bomb warning
    limit; the probe of a file it refuses."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            w, h = header_size(data)
            return ImageProbe(**base, error=DECOMPRESSION_BOMB, detail=str(exc), width=w, height=h)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error,
                EOFError) as exc:  # fmt: skip
            return _unopenable(base, data, exc)
    oversized = any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught)
    return im, oversized


def _sig_fields(sig: tuple[int, tuple[int, int, int]] | None) -> dict:
    return {"dhash": sig[0], "tone": sig[1]} if sig else {}


def _unopenable(base: dict, data: bytes, exc: Exception) -> ImageProbe:
    from PIL import Image, UnidentifiedImageError

    # A header claiming a huge size is the real problem even when the rest is garbage.
    w, h = header_size(data)
    if w * h > 2 * (Image.MAX_IMAGE_PIXELS or w * h):
        return ImageProbe(
            **base, error=DECOMPRESSION_BOMB, detail=f"the header claims {w}x{h}", width=w, height=h
        )
    if isinstance(exc, UnidentifiedImageError):
        return ImageProbe(
            **base, error=NOT_AN_IMAGE, detail="Pillow cannot identify it as an image"
        )
    return ImageProbe(**base, error=NOT_AN_IMAGE, detail=f"broken header: {exc}")


def _orientation(im: Image.Image) -> int:
    # Only EXIF already read with the header: Pillow's getexif() on a PNG whose eXIf chunk
    # comes after the pixel data would decode the whole image to find it.
    raw = im.info.get("exif")
    if not raw:
        return 1
    try:
        from PIL import Image

        exif = Image.Exif()
        with warnings.catch_warnings():
            # "Tag data larger than file" for a broken entry: the entry is skipped either
            # way, and a raw Python warning on the user's terminal tells them nothing
            # (or "had too many entries", raised when the entry is read)
            warnings.simplefilter("ignore")
            exif.load(raw)
            value = int(exif.get(0x0112, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def _alpha_used(im: Image.Image) -> bool:
    try:
        rgba = im if im.mode in ("RGBA", "LA") else im.convert("RGBA")
        # Pillow types getextrema() for multi-band images too; one band gives (min, max)
        low, _ = rgba.getchannel("A").getextrema()
        return low < 255  # type: ignore[operator]
    except Exception:
        return True
