"""The dataset check's rules: facts about folders, images and captions become Findings.

Codes are stable (scripts and tests match on them); each finding names one file (or
folder) and says how to fix it. This module holds what every rule shares (finding(),
the severities, the fix wording) and the rules across images: duplicates, shared stems
and the image count. The layout rules live in layout_rules, the per-image rules in
image_rules, the caption rules in caption_rules.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from kohyagen.dataset.images import EMPTY_FILE, ImageProbe
from kohyagen.dataset.layout import IMAGE_EXTENSIONS
from kohyagen.dataset.perceptual import near_duplicate_pairs
from kohyagen.dataset.scan import SubsetListing
from kohyagen.findings import Finding, Severity

ERR, WARN, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO

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


# --- across images: duplicates and shared stems -------------------------------------------


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
