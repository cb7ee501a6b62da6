"""Fitting an image to its bucket and kohya's image augmentations: random_crop, the face
crop of face_crop_aug_range, color_aug. Random choices come from the caller's rng so a
run (and a resumed run) draws the same ones."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from kohyagen.errors import DatasetError

if TYPE_CHECKING:
    from PIL import Image

# the choices of kohya's --resize_interpolation (train_network.args.json)
INTERPOLATIONS = ("lanczos", "nearest", "bilinear", "linear", "bicubic", "cubic", "area", "box")


def resize(
    image: Image.Image, size: tuple[int, int], interpolation: str | None = None
) -> Image.Image:
    """kohya's resize_interpolation with PIL filters. Unset, kohya averages areas when
    shrinking and uses Lanczos when enlarging; PIL's box filter is that area average."""
    from PIL import Image

    if interpolation is None:
        shrink = image.size[0] >= size[0] and image.size[1] >= size[1]
        interpolation = "area" if shrink else "lanczos"
    filters = {
        "lanczos": Image.Resampling.LANCZOS,
        "nearest": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "linear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "cubic": Image.Resampling.BICUBIC,
        "area": Image.Resampling.BOX,
        "box": Image.Resampling.BOX,
    }
    return image.resize(size, filters[interpolation])


def resize_and_crop(
    image: Image.Image,
    bucket: tuple[int, int],
    *,
    rng: random.Random | None = None,
    interpolation: str | None = None,
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Scale so the image covers the bucket, then crop the centre, or with rng a random
    window (random_crop). Returns (image, crop_ltrb)."""

    bw, bh = bucket
    w, h = image.size
    # cover, not fit: the bucket is filled and the overflow cropped, as kohya's trim_and_resize
    scale = max(bw / w, bh / h)
    # rounding must not leave the scaled image a pixel short of the bucket
    new_w, new_h = max(bw, round(w * scale)), max(bh, round(h * scale))
    if (new_w, new_h) != (w, h):
        image = resize(image, (new_w, new_h), interpolation)
    if rng is None:
        left, top = (new_w - bw) // 2, (new_h - bh) // 2
    else:
        left, top = rng.randint(0, new_w - bw), rng.randint(0, new_h - bh)
    return image.crop((left, top, left + bw, top + bh)), (left, top, left + bw, top + bh)


def native_crop(image: Image.Image, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A random size-d window of the image at full scale (no bucketing with random_crop)."""
    w, h = image.size
    left, top = rng.randint(0, max(0, w - size[0])), rng.randint(0, max(0, h - size[1]))
    return image.crop((left, top, left + size[0], top + size[1]))


def face_from_name(path: Path) -> tuple[int, int, int, int] | None:
    """kohya's face box in the file name: `<name>_<cx>_<cy>_<w>_<h>.<ext>` (5+ parts)."""
    tokens = path.stem.split("_")
    # fewer parts: not a face-annotated name, so kohya crops as if there were no face
    if len(tokens) < 5:
        return None
    try:
        cx, cy, w, h = (int(t) for t in tokens[-4:])
    except ValueError as exc:
        raise DatasetError(
            "face_crop_aug_range reads the face box from file names ending in"
            " _<cx>_<cy>_<w>_<h>; this one's last four parts are not numbers",
            path=path,
            hint="rename the image, or remove face_crop_aug_range",
        ) from exc
    # kohya uses the box only when cx > 0: a 0 there marks an image without a face
    return (cx, cy, w, h) if cx > 0 else None


def face_crop(
    image: Image.Image,
    size: tuple[int, int],
    face: tuple[int, int, int, int],
    face_range: tuple[float, float],
    *,
    random_crop: bool,
    rng: random.Random,
    interpolation: str | None = None,
) -> Image.Image:
    """kohya's face crop: scale so the face fills 1/high .. 1/low of the shorter side (never
    upscaling, always covering the target), then cut a target-sized window around the face,
    jittered a little, or widely with random_crop."""

    width, height = image.size
    tw, th = size
    if (width, height) == (tw, th):
        return image
    cx, cy, fw, fh = face
    face_size = max(fw, fh)
    short = min(tw, th)
    cover = max(th / height, tw / width)
    min_scale = min(1.0, max(cover, short / (face_size * face_range[1])))
    max_scale = min(1.0, max(min_scale, short / (face_size * face_range[0])))
    scale = min_scale if min_scale >= max_scale else rng.uniform(min_scale, max_scale)
    nw, nh = int(width * scale + 0.5), int(height * scale + 0.5)
    if (nw, nh) != (width, height):
        image = resize(image, (nw, nh), interpolation)
    centre = (int(cx * scale + 0.5), int(cy * scale + 0.5))
    starts = []
    for target, length, face_p in ((tw, nw, centre[0]), (th, nh, centre[1])):
        start = face_p - target // 2
        if random_crop:
            # the sum of two uniform draws: a triangle, so the face is mostly kept in frame
            spread = max(length - face_p, face_p)
            start += rng.randint(0, spread) + rng.randint(0, spread) - spread
        # small faces are not jittered: ±5% of them would move the window by a pixel or two
        elif face_range[0] != face_range[1] and face_size > short // 10 and face_size >= 40:
            start += rng.randint(-face_size // 20, face_size // 20)
        starts.append(max(0, min(start, length - target)))
    left, top = starts
    return image.crop((left, top, left + tw, top + th))


def color_aug(image: Image.Image, rng: random.Random) -> Image.Image:
    """kohya's color_aug: a third of the time, a hue shift of up to 8 of OpenCV's 180 hue
    steps, or else a gamma in 0.95..1.05 applied to the raw 0..255 values (kohya's quirk:
    not normalised first, so it also darkens or brightens). kohya converts RGB data as if
    it were BGR, which mirrors the hue circle; a symmetric shift makes that the same."""
    import numpy as np
    from PIL import Image

    # kohya's color_aug changes about a third of the images and leaves the rest as they are
    if rng.random() > 0.33:
        return image
    if rng.random() > 0.5:
        shift = rng.uniform(-8, 8) * 256 / 180  # PIL's hue runs over 0..255
        hsv = np.asarray(image.convert("HSV")).copy()
        hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.float64) + shift) % 256).astype(np.uint8)
        return Image.fromarray(hsv, "HSV").convert("RGB")
    gamma = rng.uniform(0.95, 1.05)
    arr = np.asarray(image, dtype=np.float64) ** gamma
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
