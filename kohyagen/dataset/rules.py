"""The dataset check's rules: facts about folders, images and captions become Findings.

Codes are stable (scripts and tests match on them); each finding names one file (or
folder) and says how to fix it.
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from pathlib import Path

from kohyagen.dataset.images import (
    DECODE_FAILED,
    DECOMPRESSION_BOMB,
    EMPTY_FILE,
    NOT_AN_IMAGE,
    TRUNCATED,
    UNREADABLE,
    ImageProbe,
)
from kohyagen.dataset.layout import IMAGE_EXTENSIONS, parse_folder_name
from kohyagen.dataset.perceptual import HIGH_BIT_MODES, near_duplicate_pairs
from kohyagen.dataset.scan import DirListing, SubsetListing
from kohyagen.findings import Finding, Severity
from kohyagen.validate import name_problem

ERR, WARN, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO

EXTREME_ASPECT = 3.0  # long side / short side
NEAR_DUPLICATE_BITS = 4  # of 64 dHash bits
TOO_FEW_IMAGES = 15
PREPARE = "kohyagen dataset prepare"
KOHYA_READS = " ".join(IMAGE_EXTENSIONS)


def finding(
    sev: Severity,
    code: str,
    message: str,
    file: Path | str | None,
    fix: str | None = None,
    key: str | None = None,
) -> Finding:
    return Finding(sev, code, message, str(file) if file is not None else None, key, fix)


# --- layout -----------------------------------------------------------------------------


def layout_findings(listing: DirListing) -> list[Finding]:
    """Where the folder layout makes kohya skip, ignore or misread images."""
    out = _skipped_folder_findings(listing) + _root_findings(listing)
    for subset in listing.subsets:
        out += _subset_folder_findings(subset)
    for subset in listing.subsets:
        out += _file_name_findings(subset)
    return out


def _skipped_folder_findings(listing: DirListing) -> list[Finding]:
    """Folders kohya skips for their name."""
    out: list[Finding] = []
    for folder in listing.skipped:
        head = folder.name.partition("_")[0]
        why = (
            "its repeats prefix must be 1 or more"
            if head.lstrip("-").isdigit()
            else "its name does not start with <repeats>_"
        )
        if listing.kind == "train_dir":
            out.append(
                finding(
                    WARN,
                    "skipped-folder",
                    f"kohya ignores this folder: {why}",
                    folder,
                    f"rename it to 10_{folder.name.partition('_')[2] or folder.name} "
                    "(repeats, then the class tokens)",
                )
            )
    return out


def _root_findings(listing: DirListing) -> list[Finding]:
    """The folder given is an N_name/ folder or a plain image folder; loose images."""
    out: list[Finding] = []
    if listing.kind == "image_folder":
        if listing.subsets[0].listing.images and parse_folder_name(listing.root.name):
            # the commonest kohya mistake: train_data_dir pointing at the N_name folder itself
            out.append(
                finding(
                    WARN,
                    "subset-folder-given",
                    "this is an N_name/ folder itself: kohya's train_data_dir must be the "
                    "folder above it, or kohya finds no data",
                    listing.root,
                    f"check (and train on) {listing.root.parent}",
                )
            )
        elif listing.subsets[0].listing.images:
            out.append(
                finding(
                    INFO,
                    "image-folder",
                    "a plain folder of images: kohya trains only from N_name/ folders "
                    "inside a train dir",
                    listing.root,
                    f"{PREPARE} {shlex.quote(str(listing.root))} --concept NAME builds the kohya layout",
                )
            )
    else:
        for img in listing.root_listing.images:
            out.append(
                finding(
                    WARN,
                    "loose-image",
                    "kohya ignores images directly in the train dir",
                    img,
                    "move it into an N_name/ folder",
                )
            )
    return out


def _subset_folder_findings(subset: SubsetListing) -> list[Finding]:
    """A subset folder kohya cannot list, finds empty, or whose subfolders it ignores."""
    out: list[Finding] = []
    problem = None if subset.pseudo else name_problem(subset.path.name, "folder name")
    if problem is not None:
        # the class tokens come from the name, and configs and captions carry it
        out.append(
            finding(WARN, "folder-name", problem, subset.path,
                    "rename the folder to plain words (e.g. 10_sks)")
        )  # fmt: skip
    if subset.listing.error:
        out.append(
            finding(
                ERR,
                "unreadable",
                f"cannot list the folder: {subset.listing.error}",
                subset.path,
                "check its permissions",
            )
        )
    elif not subset.listing.images and not subset.pseudo:
        out.append(
            finding(
                WARN,
                "empty-subset",
                "this folder holds no image kohya reads",
                subset.path,
                f"add images ({KOHYA_READS}) or remove the folder",
            )
        )
    for sub in subset.listing.subdirs:
        if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in _safe_iter(sub)):
            out.append(
                finding(
                    WARN,
                    "nested-folder",
                    "kohya reads only the files directly in a subset folder; "
                    "the images in this subfolder are ignored",
                    sub,
                    "move them up, or make the subfolder its own N_name/ folder",
                )
            )
    return out


def _file_name_findings(subset: SubsetListing) -> list[Finding]:
    """Files kohya's glob misses for their extension."""
    out: list[Finding] = []
    for p in subset.listing.wrong_case:
        out.append(
            finding(
                WARN,
                "extension-case",
                f"kohya looks for {p.suffix.lower()} and {p.suffix.upper()} only, "
                f"so it does not find {p.suffix}",
                p,
                f"rename it to {p.stem}{p.suffix.lower()} ({PREPARE} does)",
            )
        )
    for p in subset.listing.unsupported:
        out.append(
            finding(
                WARN,
                "unsupported-format",
                f"kohya reads only {KOHYA_READS}; it skips {p.suffix} files",
                p,
                f"{PREPARE} converts it to PNG",
            )
        )
    return out


def _safe_iter(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


# --- images -----------------------------------------------------------------------------

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


def shown_path(path: str, root: Path | None) -> str:
    """path relative to the checked folder when it is inside it (for messages)."""
    if root is None:
        return path
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def duplicate_findings(
    probes: list[ImageProbe], *, near: bool, root: Path | None = None
) -> list[Finding]:
    out: list[Finding] = []
    first_by_digest: dict[str, str] = {}
    exact: set[str] = set()
    for probe in probes:
        if probe.digest is None or probe.error == EMPTY_FILE:
            continue
        first = first_by_digest.setdefault(probe.digest, probe.path)
        if first != probe.path:
            exact.add(probe.path)
            out.append(
                finding(
                    WARN,
                    "duplicate",
                    f"same bytes as {shown_path(first, root)}",
                    probe.path,
                    "remove one copy (duplicates weigh twice in training)",
                )
            )
    if near:
        hashed = [p for p in probes if p.dhash is not None and p.path not in exact]
        hashes = [p.dhash for p in hashed if p.dhash is not None]  # all of them: see hashed
        tones = [p.tone or (0, 0, 0) for p in hashed]
        for i, j, dist in near_duplicate_pairs(hashes, NEAR_DUPLICATE_BITS, tones):
            a, b = hashed[i], hashed[j]
            out.append(
                finding(
                    INFO,
                    "near-duplicate",
                    f"looks almost the same as {shown_path(a.path, root)} ({dist}/64 hash bits differ)",
                    b.path,
                    "keep the better one unless the difference matters",
                )
            )
    return out


def same_stem_findings(subset: SubsetListing) -> list[Finding]:
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for img in subset.listing.images:
        by_stem[img.stem].append(img)
    out = []
    for paths in by_stem.values():
        for extra in paths[1:]:
            out.append(
                finding(
                    WARN,
                    "same-stem",
                    f"{paths[0].name} and {extra.name} share a name, so they share one "
                    "caption file (often a converted copy)",
                    extra,
                    "remove the copy or rename one",
                )
            )
    return out


# --- numbers ----------------------------------------------------------------------------


def size_advice(n: int) -> str:
    """The guide's dataset-size ranges (simple 20–40, medium 40–80, complex 80–150)."""
    if n == 0:
        return "no images"
    if n < TOO_FEW_IMAGES:
        return f"{n} images: too few; aim for 20–40 for a simple concept"
    if n < 20:
        return f"{n} images: on the low side; 20–40 suit a simple concept"
    if n <= 40:
        return f"{n} images: right for a simple concept (one face, a basic style): 20–40"
    if n <= 80:
        return f"{n} images: right for a medium concept (a character in several outfits): 40–80"
    if n <= 150:
        return f"{n} images: right for a complex concept (varied scenes or style): 80–150"
    return f"{n} images: more than the 80–150 a complex concept needs; training takes longer"


def count_findings(root: Path, n: int, kind: str) -> list[Finding]:
    if n == 0:
        what = (
            ("kohya finds no N_name/ folder with images: it logs 'No data found' and still exits 0")
            if kind == "train_dir"
            else "this folder holds no image kohya reads"
        )
        return [
            finding(
                ERR,
                "no-images",
                what,
                root,
                f"put the images in {root}/10_NAME/ ({KOHYA_READS}), or run {PREPARE}",
            )
        ]
    if n < TOO_FEW_IMAGES:
        return [
            finding(
                WARN,
                "too-few-images",
                size_advice(n),
                root,
                "add images: 20–40 for a simple concept",
            )
        ]
    return []
