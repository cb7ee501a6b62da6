"""The dataset check's layout rules: where the folder layout makes kohya skip, ignore or
misread images (folder names, loose images, empty or nested folders, file extensions).

Separate from the image and count rules (rules, image_rules) because these look only at
the listing, never at a probe: they are about where files sit, not what they hold.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from kohyagen.dataset.layout import IMAGE_EXTENSIONS, parse_folder_name
from kohyagen.dataset.rules import ERR, INFO, KOHYA_READS, PREPARE, WARN, finding
from kohyagen.dataset.scan import DirListing, SubsetListing
from kohyagen.findings import Finding
from kohyagen.validate import name_problem

__all__ = ["layout_findings"]


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
