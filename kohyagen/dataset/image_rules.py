"""The dataset check's image rules: a probe's read error, pixel format, alpha and
geometry become Findings.

Separate from the layout and count rules (layout_rules, rules) because these judge one
image at a time from its probe, the largest set of rules and the one that grows with
every file kohya mishandles.
"""

from __future__ import annotations

from kohyagen.dataset.images import (
    DECODE_FAILED,
    DECOMPRESSION_BOMB,
    EMPTY_FILE,
    NOT_AN_IMAGE,
    TRUNCATED,
    UNREADABLE,
    ImageProbe,
)
from kohyagen.dataset.perceptual import HIGH_BIT_MODES
from kohyagen.dataset.rules import ERR, INFO, PREPARE, WARN, finding
from kohyagen.findings import Finding

__all__ = ["EXTREME_ASPECT", "image_findings"]

EXTREME_ASPECT = 3.0  # long side / short side

_FATAL = {
    EMPTY_FILE: ("the file is empty (0 bytes)", "replace it with the real image or remove it"),
    UNREADABLE: ("cannot read the file: {d}", "check its permissions and links, or remove it"),
    NOT_AN_IMAGE: (
        "not an image Pillow can open ({d}); kohya crashes on it",
        "replace it with the real image or remove it",
    ),
    TRUNCATED: (
        "truncated ({d}); kohya crashes when it reaches this image",
        "download or export it again, or remove it",
    ),
    DECOMPRESSION_BOMB: (
        "{w}x{h} pixels: Pillow refuses images this large "
        "(decompression-bomb guard), so kohya crashes on it",
        "downscale it, e.g. to 2048 px on the long side",
    ),
    DECODE_FAILED: (
        "the pixel data cannot be decoded ({d}); kohya crashes on it",
        "export it again or remove it",
    ),
}


def image_findings(probe: ImageProbe, *, min_side: int, model: str) -> list[Finding]:
    """A read error alone (kohya would crash), else the format and geometry findings."""
    p = probe.path
    if probe.error:
        message, fix = _FATAL[probe.error]
        message = message.format(d=probe.detail, w=probe.width, h=probe.height)
        return [finding(ERR, probe.error, message, p, fix)]
    return _pixel_format_findings(probe) + _geometry_findings(probe, min_side=min_side, model=model)


def _pixel_format_findings(probe: ImageProbe) -> list[Finding]:
    """Size limits, colour modes and alpha that kohya's RGB conversion mishandles."""
    p = probe.path
    out: list[Finding] = []
    w, h, mode = probe.width, probe.height, probe.mode
    if probe.oversized:
        out.append(
            finding(
                WARN,
                DECOMPRESSION_BOMB,
                f"{w}x{h} pixels: above Pillow's decompression-bomb warning limit; "
                "slow and memory-hungry to load every epoch",
                p,
                "downscale it, e.g. to 2048 px on the long side",
            )
        )
    if mode == "CMYK":
        out.append(
            finding(
                WARN,
                "mode-cmyk",
                "CMYK image: kohya converts it to RGB without a colour profile, so colours shift",
                p,
                f"{PREPARE} converts it to RGB",
            )
        )
    elif mode in HIGH_BIT_MODES:
        out.append(
            finding(
                ERR,
                "high-bit-depth",
                f"{mode} ({'16' if mode.startswith('I;16') else '32'}-bit) image: kohya's "
                "convert to RGB clips it, so it trains almost white",
                p,
                f"{PREPARE} converts it to 8-bit",
            )
        )
    return out + _alpha_findings(probe)


def _alpha_findings(probe: ImageProbe) -> list[Finding]:
    """Transparency kohya drops, and palette images it converts."""
    p, mode = probe.path, probe.mode
    out: list[Finding] = []
    if probe.has_alpha:
        if probe.alpha_used is False:
            out.append(
                finding(
                    INFO,
                    "alpha-channel",
                    "has an alpha channel, but every pixel is opaque",
                    p,
                    "nothing to do; or save it without alpha",
                )
            )
        else:
            out.append(
                finding(
                    WARN,
                    "alpha-channel",
                    "has transparency: kohya drops the alpha channel, so transparent areas "
                    "train as whatever colour is stored under them (often black)",
                    p,
                    f"{PREPARE} flattens it onto white; or use alpha_mask",
                )
            )
    elif mode == "P":
        out.append(
            finding(
                INFO,
                "mode-palette",
                "palette image: kohya converts it to RGB on load",
                p,
                f"nothing needed; {PREPARE} stores it as RGB",
            )
        )
    return out


def _geometry_findings(probe: ImageProbe, *, min_side: int, model: str) -> list[Finding]:
    """Rotation, size and aspect ratio that change what kohya trains on."""
    p = probe.path
    out: list[Finding] = []
    w, h = probe.width, probe.height
    if probe.orientation != 1:
        out.append(
            finding(
                WARN,
                "exif-rotation",
                f"EXIF orientation {probe.orientation}: kohya ignores it, so the image "
                "trains rotated or mirrored there (kohyagen's builtin trainer applies it)",
                p,
                f"{PREPARE} applies the rotation (or rotate it in an editor)",
            )
        )
    short = min(w, h)
    if short < min_side:
        out.append(
            finding(
                WARN,
                "too-small",
                f"{w}x{h}: short side {short} px is below {min_side} px, the minimum for "
                f"{model}; it is upscaled and trains blurry",
                p,
                "use a larger original, or remove it",
            )
        )
    ratio = max(w, h) / short
    if ratio > EXTREME_ASPECT:
        out.append(
            finding(
                WARN,
                "extreme-aspect",
                f"{w}x{h}: aspect ratio {ratio:.1f}:1; buckets crop or squeeze such images",
                p,
                "crop it to the subject (at most 3:1)",
            )
        )
    return out
