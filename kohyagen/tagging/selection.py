"""Which images a tagging run captions: the images found (kohya's N_name/ folders
included), one image per caption file, no caption path that is not a regular file, and
in skip mode only the uncaptioned ones.

Separate from the run (directory) because it only lists and stats files; it loads no
model and writes nothing but the removal of stale temp files a killed run left.
"""

from __future__ import annotations

import stat
from pathlib import Path

from kohyagen.dataset.layout import is_image_name, parse_folder_name
from kohyagen.errors import DatasetError
from kohyagen.tagging.captions import has_caption, remove_stale_temps
from kohyagen.tagging.loop import ImageFailure, caption_path

__all__ = ["find_images", "select_images"]


def select_images(
    root: Path, recursive: bool, caption_ext: str, mode: str
) -> tuple[list[Path], list[Path], list[str], list[ImageFailure]]:
    """Every image found, those to tag, warnings about shared captions, and the images
    whose caption path is no regular file (reported, never read or replaced)."""
    found = find_images(root, recursive=recursive)
    # temp files a killed run left beside the captions would otherwise stay forever
    remove_stale_temps({p.parent for p in found})
    readable, unreadable = _regular_images(found)
    images, shared = _one_image_per_caption(readable, caption_ext)
    images, blocked = _special_captions(images, caption_ext)
    blocked = unreadable + blocked
    todo = [p for p in images if mode != "skip" or not has_caption(caption_path(p, caption_ext))]
    return found, todo, shared, blocked


def find_images(root: Path, *, recursive: bool = False) -> list[Path]:
    """Images in root (and below, when recursive), hidden files and folders excluded, sorted.

    Hidden names are skipped as kohya's glob skips them: macOS leaves "._x.png" resource
    forks next to every copied image.
    """
    if recursive:
        found = [
            p
            for p in root.rglob("*")
            if is_image_name(p)
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
            and not p.is_dir()
        ]
    else:
        # a kohya train dir (the parent of N_name/ folders) is one dataset: its concept
        # folders are what kohya reads, so they are tagged without --recursive
        folders = [root, *(d for d in root.iterdir() if d.is_dir() and parse_folder_name(d.name))]
        found = [
            p
            for folder in folders
            for p in folder.iterdir()
            # not is_file(): a FIFO or a link loop is found, and reported as not tagged
            if is_image_name(p) and not p.name.startswith(".") and not p.is_dir()
        ]
    if not found:
        hint = "pass the folder that holds the images"
        if not recursive and any(p.is_dir() for p in root.iterdir()):
            hint = "the images may be in subfolders: add --recursive"
        raise DatasetError("no images found", path=root, hint=hint)
    return sorted(found)


def _regular_images(images: list[Path]) -> tuple[list[Path], list[ImageFailure]]:
    """The images that are regular files, and why the others are not tagged: a FIFO would
    block the read, a link loop or a dangling link cannot be opened (dataset check calls
    each an error; tag lists them rather than leave them out without a word)."""
    kept: list[Path] = []
    failed: list[ImageFailure] = []
    for image in images:
        try:
            mode = image.stat().st_mode
        except OSError as exc:
            failed.append(ImageFailure(image, f"cannot be read: {exc.strerror or exc}"))
            continue
        if stat.S_ISREG(mode):
            kept.append(image)
        else:
            failed.append(ImageFailure(image, f"not a regular file (a {_kind(mode)})"))
    return kept, failed


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    return "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file"


def _special_captions(images: list[Path], extension: str) -> tuple[list[Path], list[ImageFailure]]:
    """Images whose caption path is a FIFO, device or folder: reading it would block or
    never end, and replacing it would destroy something that is not a caption."""
    kept: list[Path] = []
    blocked: list[ImageFailure] = []
    for image in images:
        caption = caption_path(image, extension)
        try:
            mode = caption.stat().st_mode
        except OSError:
            kept.append(image)  # no caption yet (or a dangling link, replaced as a file)
            continue
        if stat.S_ISREG(mode):
            kept.append(image)
            continue
        reason = f"{caption.name} is not a regular file, so it was neither read nor replaced"
        blocked.append(ImageFailure(image, f"{reason} (remove it to tag this image)"))
    return kept, blocked


def _one_image_per_caption(images: list[Path], extension: str) -> tuple[list[Path], list[str]]:
    """a.png and a.jpg would write the same a.txt: tag the first, warn about the rest."""
    owner: dict[Path, Path] = {}
    kept: list[Path] = []
    clashes: list[str] = []
    for image in images:
        caption = caption_path(image, extension)
        if caption in owner:
            clashes.append(f"{image.name} shares {caption.name} with {owner[caption].name}")
            continue
        owner[caption] = image
        kept.append(image)
    warnings = []
    if clashes:
        warnings.append(
            f"{len(clashes)} image(s) not tagged because another image has the same name "
            f"and so the same caption file ({clashes[0]}); rename them so kohya can tell "
            "their captions apart"
        )
    return kept, warnings
