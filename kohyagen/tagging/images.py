"""Image preprocessing the WD14 taggers were trained with.

Transparency is composited on white, the image is fitted into a white square
(centred), BGR, float32 in 0..255. The order of work is chosen for speed: JPEGs are
decoded at a reduced DCT scale when they are much larger than the model side, and
the image is shrunk before it is padded, so no full-size padded copy is ever made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kohyagen import safe_io

WHITE = (255, 255, 255)


def load_square_rgb(path: Path, size: int) -> np.ndarray:
    """The image as a size x size x 3 uint8 RGB array, padded on white, centred.

    The EXIF orientation is deliberately not applied: kohya trains on the pixels as
    stored, and the tags should describe what the trainer sees.
    """
    # a FIFO named x.png would block Image.open, a link to /dev/zero never end its read
    with safe_io.open_regular(path) as handle, Image.open(handle) as image:
        # Let the JPEG decoder do most of the downscaling: it may pick any DCT scale
        # that keeps the long side at least `size` (draft wants both sides covered).
        width, height = image.size
        if width and height:
            fit = size / max(width, height)
            image.draft("RGB", (max(1, round(width * fit)), max(1, round(height * fit))))
        image = _flatten_on_white(image)
    width, height = image.size
    scale = size / max(width, height)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    pixels = np.asarray(image, dtype=np.uint8)
    # already square: no padding copy
    if new_w == size and new_h == size:
        return pixels
    # white padding, centred: what kohya's tagger (tag_images_by_wd14_tagger.py:37-64) and the
    # WD14 training data use
    canvas = np.full((size, size, 3), 255, dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = pixels
    return canvas


def _flatten_on_white(image: Image.Image) -> Image.Image:
    # a palette image's transparency is only seen once it is RGBA
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        # composited on white, not black: kohya's tagger does the same
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    # load now: the file is closed when the `with` in the caller ends
    image.load()
    return image


def fill_slot(batch: np.ndarray, row: int, rgb: np.ndarray, layout: str) -> None:
    """Write one image into its batch row as the model wants it: BGR, float, 0..255."""
    # the WD14 models were trained on OpenCV's BGR order, values 0..255 unnormalised
    bgr = rgb[:, :, ::-1]
    if layout == "NHWC":
        batch[row] = bgr
    else:
        # some exports (the 3-part repo ids) take NCHW
        batch[row] = bgr.transpose(2, 0, 1)


def prepare_into(batch: np.ndarray, row: int, path: Path, size: int, layout: str) -> str | None:
    """Load, preprocess and place one image; the reason it failed, or None.

    Runs in worker threads, so every failure becomes a value, never an exception.
    """
    try:
        fill_slot(batch, row, load_square_rgb(path, size), layout)
    except Exception as exc:  # an unreadable image must never stop the run
        return _describe(exc)
    return None


def _describe(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image format Pillow can read, or the file is corrupt"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
