"""Bucket settings as kohya computes them for one dataset, and the images they cannot hold."""

from __future__ import annotations

from pathlib import Path

from kohyagen.config.lint_rules import parse_resolution
from kohyagen.dataset.buckets import BucketSettings, kohya_bucket_fails
from kohyagen.findings import Finding, Severity


def bucket_settings_of(ctx: dict) -> BucketSettings | None:
    """The bucket options kohya uses for one dataset (None when buckets are off or unknown)."""
    res = parse_resolution(ctx.get("resolution"))
    steps = ctx.get("bucket_reso_steps", 64)
    if res is None or not ctx.get("enable_bucket") or not isinstance(steps, int) or steps <= 0:
        return None
    low, high = ctx.get("min_bucket_reso", 256), ctx.get("max_bucket_reso", 1024)
    if not isinstance(low, int) or not isinstance(high, int):
        return None
    return BucketSettings(res, low, high, steps, ctx.get("bucket_no_upscale") is True)


def bucket_crash_findings(
    file: str, key: str, images: list[Path], settings: BucketSettings | None, *, where: str
) -> list[Finding]:
    """Images kohya's select_bucket divides by zero on (see buckets.kohya_bucket_fails)."""
    if settings is None or not settings.no_upscale:
        return []
    from PIL import Image

    bad = []
    for img in images:
        try:
            with Image.open(img) as im:
                w, h = im.size  # the header only; no pixels are decoded
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        if kohya_bucket_fails(w, h, settings):
            bad.append(f"{img.name} ({w}x{h})")
    if not bad:
        return []
    return [
        Finding(
            Severity.ERROR,
            "bucket-zero-side",
            f"{len(bad)} image(s) in {where} get a 0-pixel bucket side with bucket_no_upscale "
            f"at resolution {settings.resolution[0]}x{settings.resolution[1]} and "
            f"bucket_reso_steps {settings.steps}, e.g. {', '.join(bad[:3])}: kohya stops with "
            "a ZeroDivisionError in select_bucket",
            file=file,
            key=key,
            fix="remove or enlarge those images, or set bucket_no_upscale = false",
        )
    ]
