"""Re-encoding for prepare: which images kohya would mishandle as they are, and writing
them again rotated, flattened or converted to a mode and format kohya reads.

Separate from prepare because it is the one place that decodes and writes pixels
(Pillow, numpy, ImageCms); prepare itself only moves files and captions around.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from kohyagen.atomic import temp_name
from kohyagen.dataset.images import ImageProbe
from kohyagen.dataset.layout import IMAGE_EXTENSIONS
from kohyagen.dataset.perceptual import HIGH_BIT_MODES

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["UndecodableImage", "needs_conversion", "reencode"]


class UndecodableImage(Exception):
    """Pillow could not decode the pixels (cut short, damaged): the header check passed,
    since it reads no pixels, so prepare learns of it only here and skips the image."""


def needs_conversion(probe: ImageProbe, suffix: str) -> str | None:
    # None: kohya reads the file as it is, so prepare copies it unchanged
    if suffix.lower() not in IMAGE_EXTENSIONS:
        return f"{suffix} is not read by kohya"
    if probe.mode == "CMYK":
        return "CMYK"
    if probe.mode in HIGH_BIT_MODES:
        return f"{probe.mode} high bit depth"
    if probe.has_alpha:
        return "transparency"
    return None


def reencode(src: Path, dest: Path, *, rotate: bool, flatten: bool) -> None:
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(src) as im:
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as exc:
            # Pillow's decode errors are OSErrors without an errno ("image file is
            # truncated", "broken data stream"); one with an errno is the OS's, and is raised
            if isinstance(exc, OSError) and exc.errno is not None:
                raise
            raise UndecodableImage(str(exc)) from exc
        icc = im.info.get("icc_profile")
        if rotate:
            im = ImageOps.exif_transpose(im)
        if flatten:
            if im.mode == "CMYK":
                im = _cmyk_to_rgb(im, icc)
                icc = None  # the profile described the CMYK data, not the result
            elif im.mode in HIGH_BIT_MODES:
                arr = np.asarray(im, dtype=np.float64)
                scale = 1.0 if arr.max(initial=0) <= 1.0 and im.mode == "F" else 65535.0
                arr = np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
                im = Image.fromarray(arr, mode="L")
            elif im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
                rgba = im.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, rgba).convert("RGB")
            elif im.mode not in ("RGB", "L"):
                im = im.convert("RGB")
        tmp = temp_name(dest)  # dest's name may already be near the 255-byte limit
        if dest.suffix == ".jpg":
            im.save(tmp, "JPEG", quality=95, subsampling=0, icc_profile=icc)
        else:
            im.save(tmp, "PNG", icc_profile=icc)
        os.replace(tmp, dest)


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """Through the embedded colour profile when there is one; Pillow's plain formula if not."""
    if icc:
        try:
            import io

            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            # Pillow's stub allows None, which only inPlace=True returns
            return ImageCms.profileToProfile(im, source, srgb, outputMode="RGB")  # type: ignore[return-value]
        except Exception:
            pass
    return im.convert("RGB")
