"""What prepare takes from SRC: its image files, the ones that can be used (with their
probes), and each image's caption.

Separate from prepare because it only reads the source and refuses one that cannot be
prepared; prepare's own work (staging, copying, moving into place) starts from its
answer.
"""

from __future__ import annotations

from pathlib import Path

from kohyagen.dataset.captions import decode_caption_bytes, read_bytes
from kohyagen.dataset.images import ImageProbe
from kohyagen.dataset.layout import IMAGE_EXTENSIONS, parse_folder_name
from kohyagen.dataset.probe_pool import probe_many
from kohyagen.dataset.scan import list_folder
from kohyagen.errors import DatasetError, UsageError

__all__ = ["source_caption", "source_images", "usable_images"]


def source_images(src: Path, out: Path) -> list[Path]:
    """The image files directly in SRC, refusing a source that cannot be prepared."""
    if not src.exists():
        raise DatasetError("source folder not found", path=src, hint="check the path")
    if not src.is_dir():
        raise DatasetError("expected a folder of images, got a file", path=src)
    if out.resolve() == src.resolve():
        # the N_concept/ folder would be added to SRC, which prepare promises not to change
        raise UsageError(
            "the output folder is the source folder",
            path=src,
            hint="choose another train dir with -o (the default is training_data)",
        )
    listing = list_folder(src)
    if listing.error:
        raise DatasetError(f"cannot read the folder: {listing.error}", path=src)
    candidates = [*listing.images, *listing.wrong_case, *listing.unsupported]
    if not candidates:
        kohya_dirs = [d for d in listing.subdirs if parse_folder_name(d.name)]
        hint = (
            f"it already holds kohya folders ({kohya_dirs[0].name}); pass one of them as SRC"
            if kohya_dirs
            else "pass the folder that holds the images"
        )
        raise DatasetError("no images in the source folder", path=src, hint=hint)
    return candidates


def usable_images(
    src: Path, candidates: list[Path], *, convert: bool, workers: int | None
) -> tuple[list[tuple[Path, ImageProbe]], list[tuple[str, str]]]:
    """The images that can be copied (with their probes), and the skipped ones with why."""
    probes = probe_many([str(p) for p in candidates], workers=workers)
    usable: list[tuple[Path, ImageProbe]] = []
    skipped: list[tuple[str, str]] = []
    for path, probe in zip(candidates, probes, strict=True):
        if probe.error:
            skipped.append((str(path), f"{probe.error}: {probe.detail}"))
        elif not convert and path.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((str(path), f"{path.suffix} is not read by kohya (conversion is off)"))
        else:
            usable.append((path, probe))
    if not usable:
        raise DatasetError(
            "none of the images in the source folder can be used",
            path=src,
            hint="run `kohyagen dataset check` on it to see why",
        )
    return usable, skipped


def source_caption(
    image: Path, files: dict[str, Path], caption_ext: str, unreadable: list[tuple[str, str]]
) -> str | None:
    """The first line of image's caption in the source folder, if it has one. A caption
    that cannot be read (a FIFO, no permission) goes into unreadable: the copy would
    otherwise train on the trigger alone without a word, where check calls it an error."""
    # the extension asked for first, then the tagger's .txt and kohya's default .caption
    for ext in dict.fromkeys((caption_ext, ".txt", ".caption")):
        cap = files.get(image.stem + ext)
        if cap is None:
            continue
        try:
            text = decode_caption_bytes(read_bytes(cap))
        except OSError as exc:
            why = exc.strerror or str(exc)
            unreadable.append(
                (str(cap), f"unreadable caption: {why} (the image was taken without it)")
            )
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[0] if lines else None
    return None
