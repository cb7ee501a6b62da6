"""Listing dataset folders the way kohya lists them.

kohya finds a subset's images with one glob per extension in IMAGE_EXTENSIONS and its
upper-case form (`*.png`, `*.PNG`, ...). So on a case-sensitive file system `a.Jpg` is
not found, dot-files (macOS `._a.jpg`) are skipped by the `*` pattern, only files
directly in the folder count, and broken links are still listed (then fail to open).
This module reports all of that so the check can say what kohya will and will not see.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from kohyagen.dataset.layout import IMAGE_EXTENSIONS, KOHYA_SUFFIXES, parse_folder_name
from kohyagen.errors import DatasetError

# Image formats people put in datasets that kohya does not read without plugins.
OTHER_IMAGE_SUFFIXES = frozenset(
    {
        ".gif",
        ".tif",
        ".tiff",
        ".avif",
        ".heic",
        ".heif",
        ".jxl",
        ".jfif",
        ".jp2",
        ".ico",
        ".tga",
        ".psd",
        ".dng",
        ".cr2",
        ".nef",
        ".arw",
    }
)


@dataclass(frozen=True)
class FolderListing:
    path: Path
    images: tuple[Path, ...] = ()  # what kohya's glob returns, sorted
    wrong_case: tuple[Path, ...] = ()  # e.g. a.Jpg: an image suffix kohya's glob misses
    unsupported: tuple[Path, ...] = ()  # image formats kohya does not read
    files: tuple[Path, ...] = ()  # every other non-hidden file (captions among them)
    subdirs: tuple[Path, ...] = ()  # non-hidden folders
    error: str | None = None  # the folder could not be listed

    def files_with_suffix(self, suffix: str) -> list[Path]:
        return [p for p in self.files if p.suffix == suffix]


@dataclass(frozen=True)
class SubsetListing:
    listing: FolderListing
    repeats: int
    class_tokens: str
    is_reg: bool = False
    pseudo: bool = False  # a plain image folder treated as one subset with 1 repeat

    @property
    def path(self) -> Path:
        return self.listing.path


@dataclass(frozen=True)
class DirListing:
    root: Path
    kind: str  # "train_dir" | "image_folder"
    subsets: tuple[SubsetListing, ...]
    skipped: tuple[Path, ...] = ()  # subfolders kohya ignores (no N_ prefix, repeats < 1)
    root_listing: FolderListing = field(default_factory=lambda: FolderListing(Path(".")))


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # e.g. a symlink loop
        return False


def list_folder(path: Path) -> FolderListing:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        return FolderListing(path, error=exc.strerror or str(exc))
    images, wrong_case, unsupported, files, subdirs = [], [], [], [], []
    for entry in entries:
        # kohya's glob `*` never matches dot-files (macOS ._x.jpg resource forks)
        if entry.name.startswith("."):
            continue
        p = Path(entry.path)
        if _is_dir(entry):
            subdirs.append(p)
            continue
        suffix = p.suffix
        if suffix in KOHYA_SUFFIXES:
            images.append(p)  # broken links included, as kohya's glob includes them
        # an image kohya's case-sensitive glob misses on Linux
        elif suffix.lower() in IMAGE_EXTENSIONS:
            wrong_case.append(p)
        elif suffix.lower() in OTHER_IMAGE_SUFFIXES:
            unsupported.append(p)
        else:
            files.append(p)
    return FolderListing(
        path, tuple(images), tuple(wrong_case), tuple(unsupported), tuple(files), tuple(subdirs)
    )


def _require_dir(path: Path, what: str) -> None:
    if not os.path.lexists(path):
        raise DatasetError(f"{what} not found", path=path, hint="check the path")
    if not path.exists():
        raise DatasetError(
            f"{what} is a broken link", path=path, hint="point it at an existing folder"
        )
    if not path.is_dir():
        raise DatasetError(
            f"expected a {what}, got a file",
            path=path,
            hint="pass the folder that holds the images or the N_name/ folders",
        )


def scan(root: str | Path, *, is_reg: bool = False) -> DirListing:
    """List a kohya train dir (parent of N_name/) or a plain folder of images."""
    root = Path(root)
    what = "regularisation folder" if is_reg else "dataset folder"
    _require_dir(root, what)
    top = list_folder(root)
    if top.error:
        raise DatasetError(f"cannot read the {what}: {top.error}", path=root)
    subsets, skipped = [], []
    for sub in top.subdirs:
        parsed = parse_folder_name(sub.name)
        # kohya logs `ignore directory without repeats` and skips it
        if parsed is None:
            skipped.append(sub)
            continue
        repeats, tokens = parsed
        subsets.append(SubsetListing(list_folder(sub), repeats, tokens, is_reg=is_reg))
    has_loose = bool(top.images or top.wrong_case or top.unsupported)
    # A folder with N_name/ subfolders is a train dir. A plain folder of images is not what
    # kohya reads, but the check still looks at it as one subset, so prepare can fix it.
    if subsets or is_reg or (skipped and not has_loose):
        return DirListing(root, "train_dir", tuple(subsets), tuple(skipped), top)
    pseudo = SubsetListing(top, 1, "", pseudo=True)
    return DirListing(root, "image_folder", (pseudo,), tuple(skipped), top)
