"""The perceptual hash: a 64-bit difference hash and the mean colour of an image, and
the search for pairs of hashes close enough to be near-duplicates.

Separate from the probe because it works on pixels (numpy, Pillow's resampling), not on
the file: the probe calls it only when near-duplicates are looked for, and the rules
compare the hashes it made. It owns HIGH_BIT_MODES, the modes its 8-bit view scales
down, which the rules and prepare consult as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

# Pillow modes that keep more than 8 bits per channel; kohya's convert("RGB") clips them.
HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def _as_8bit(im: Image.Image) -> Image.Image:
    """An RGB or L view of any mode, so that reduce/resize accept it."""
    import numpy as np
    from PIL import Image

    if im.mode in ("RGB", "L"):
        return im
    if im.mode in HIGH_BIT_MODES:
        arr = np.asarray(im, dtype=np.float64)
        top = 1.0 if im.mode == "F" and arr.max(initial=0) <= 1.0 else 65535.0
        return Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), "L")
    return im.convert("RGB")


def signature(im: Image.Image) -> tuple[int, tuple[int, int, int]] | None:
    """(64-bit dHash, mean RGB) of an image; None when it cannot be computed."""
    import numpy as np
    from PIL import Image

    try:
        small = _as_8bit(im)
        # Shrink big images in integer steps first: much cheaper than resampling from full size.
        factor = min(small.size[0] // 72, small.size[1] // 64)
        if factor >= 2:
            small = small.reduce(factor)
        if small.mode != "RGB":
            small = small.convert("RGB")
        thumb = np.asarray(small.resize((9, 8), Image.Resampling.BILINEAR), dtype=np.float32)
    except Exception:
        return None
    tone = thumb.mean(axis=(0, 1))
    gray = thumb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    bits = (gray[:, 1:] > gray[:, :-1]).ravel()
    dhash = int(np.packbits(bits).view(">u8")[0])
    return dhash, (int(tone[0] + 0.5), int(tone[1] + 0.5), int(tone[2] + 0.5))


def dhash_of(im: Image.Image) -> int:
    """64-bit difference hash: 9×8 grayscale, one bit per horizontal neighbour comparison."""
    sig = signature(im)
    if sig is None:
        raise ValueError(f"cannot hash an image of mode {im.mode}")
    return sig[0]


def signature_cheap(im: Image.Image) -> tuple[int, tuple[int, int, int]] | None:
    """The signature without a full decode where the format allows it (JPEG DCT scaling)."""
    try:
        if im.format == "JPEG" and im.mode in ("RGB", "L"):
            im.draft(im.mode, (72, 64))
        im.load()
    except Exception:
        return None
    return signature(im)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def near_duplicate_pairs(
    hashes: list[int],
    max_distance: int,
    tones: list[tuple[int, int, int]] | None = None,
    max_tone: int = 24,
) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every pair i < j whose hashes differ in at most max_distance bits
    and, when tones are given, whose mean colours differ by at most max_tone per channel
    (a dHash only sees brightness steps, so all flat images share one)."""
    import numpy as np

    n = len(hashes)
    if n < 2:
        return []
    values = np.array(hashes, dtype=np.uint64)
    colours = np.array(tones, dtype=np.int16) if tones is not None else None
    pairs: list[tuple[int, int, int]] = []
    block = max(1, 4_000_000 // n)  # rows per step: keeps each step's matrix near 32 MB
    for start in range(0, n - 1, block):
        rows = values[start : start + block]
        # only columns from `start` on: pairs are unordered, so i < j suffices
        dist = np.bitwise_count(rows[:, None] ^ values[None, start:])
        close = dist <= max_distance
        if colours is not None:
            diff = np.abs(colours[start : start + block, None, :] - colours[None, start:, :])
            close &= diff.max(axis=2) <= max_tone
        for i, j in zip(*np.nonzero(close), strict=True):
            gi, gj = start + int(i), start + int(j)
            if gi < gj:
                pairs.append((gi, gj, int(dist[i, j])))
    return pairs
