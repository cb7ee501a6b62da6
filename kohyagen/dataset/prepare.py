"""Build a clean kohya subset (OUT/N_concept/) from a folder of images.

The source is only read: images are copied or hard-linked (or re-encoded when they need
rotating or converting) and captions are rewritten as UTF-8 with the trigger first. The
subset is built in a temporary folder beside the target and renamed into place, so an
interrupted run leaves no half-filled N_concept/ for kohya to train on. What SRC offers
is read by sources, the re-encoding done by conversion.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from kohyagen.atomic import make_staging_dir, write_text_atomic
from kohyagen.dataset.captions import normalize_caption_extension, trigger_first
from kohyagen.dataset.conversion import UndecodableImage, needs_conversion, reencode
from kohyagen.dataset.images import ImageProbe
from kohyagen.dataset.layout import parse_folder_name
from kohyagen.dataset.probe_pool import ProgressFn
from kohyagen.dataset.scan import list_folder
from kohyagen.dataset.sources import source_caption, source_images, usable_images
from kohyagen.errors import DatasetError, UsageError
from kohyagen.validate import name_problem, require, trigger_problem

# auto repeats aim at this many image-steps over AUTO_EPOCHS epochs: 100 per image,
# within the 1,500–3,000 range the usual LoRA recipes land in.
AUTO_EPOCHS = 10
AUTO_MIN_TOTAL = 1500
AUTO_MAX_TOTAL = 3000
AUTO_MAX_REPEATS = 100


@dataclass(frozen=True)
class PrepareResult:
    out_dir: Path
    subset_dir: Path
    repeats: int
    copied: int  # images copied (or linked) unchanged
    converted: int  # images re-encoded: rotated, or converted to a format/mode kohya reads
    captions_written: int
    linked: int = 0  # of `copied`, how many are hard links
    rotated: int = 0  # of `converted`, how many had their EXIF rotation applied
    skipped: tuple[tuple[str, str], ...] = ()  # (source file, why) not taken
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "subset_dir": str(self.subset_dir),
            "repeats": self.repeats,
            "copied": self.copied,
            "linked": self.linked,
            "converted": self.converted,
            "rotated": self.rotated,
            "captions_written": self.captions_written,
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "notes": list(self.notes),
        }


def auto_repeats(image_count: int, *, epochs: int = AUTO_EPOCHS) -> int:
    """Repeats so that images × repeats × epochs lands near 100 steps per image, kept within
    1,500–3,000 in total (20 images -> 10 repeats, 40 -> 8, 100 -> 3, 300 -> 1)."""
    if image_count <= 0:
        return 1
    total = min(max(100 * image_count, AUTO_MIN_TOTAL), AUTO_MAX_TOTAL)
    return max(1, min(AUTO_MAX_REPEATS, round(total / (image_count * max(1, epochs)))))


def _check_concept(concept: str) -> str:
    name = concept.strip()
    # the folder becomes N_<concept>: the same rules as every name kohyagen creates
    require(name_problem(name, "concept name"), hint="a plain name such as 'sks dog' or 'mychar'")
    return name


def _parse_repeats(repeats: int | str) -> int | None:
    if isinstance(repeats, str):
        if repeats.strip().lower() == "auto":
            return None
        if not repeats.strip().isdigit():
            raise UsageError(f"repeats must be a number or 'auto', got {repeats!r}")
        repeats = int(repeats)
    if repeats < 1:
        raise UsageError("repeats must be 1 or more", hint="or use --repeats auto")
    return repeats


def _non_empty(path: Path) -> bool:
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return True


def prepare_dataset(
    src: str | Path,
    out: str | Path,
    *,
    concept: str,
    repeats: int | str = "auto",
    trigger: str | None = None,
    link: bool = False,
    fix_orientation: bool = True,
    convert: bool = True,
    progress: ProgressFn | None = None,
    force: bool = False,
    caption_ext: str = ".txt",
    workers: int | None = None,
) -> PrepareResult:
    """Build OUT/<repeats>_<concept>/ from the images (and captions) directly in SRC."""
    src, out = Path(src), Path(out)
    concept = _check_concept(concept)
    fixed_repeats = _parse_repeats(repeats)
    trigger = trigger.strip() if trigger else None
    if trigger:
        # as run and tag: a newline would put the trigger alone on each caption's first line
        require(trigger_problem(trigger), hint="e.g. --trigger sks")
    caption_ext = normalize_caption_extension(caption_ext)
    candidates = source_images(src, out)
    usable, skipped = usable_images(src, candidates, convert=convert, workers=workers)
    n_repeats = fixed_repeats or auto_repeats(len(usable))
    if out.exists() and not out.is_dir():
        raise DatasetError("the output path is a file", path=out, hint="choose a folder with -o")
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{n_repeats}_{concept}"
    _refuse_clobber(src, out, target, concept, force)

    work = make_staging_dir(out)
    try:
        counts = _build(
            usable,
            src,
            work,
            trigger=trigger,
            link=link,
            convert=convert,
            fix_orientation=fix_orientation,
            caption_ext=caption_ext,
            progress=progress,
            skipped=skipped,
        )
        notes = _move_into_place(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PrepareResult(
        out, target, n_repeats, skipped=tuple(skipped), notes=tuple(notes), **counts
    )


def _refuse_clobber(src: Path, out: Path, target: Path, concept: str, force: bool) -> None:
    if target.resolve() == src.resolve():
        raise DatasetError(
            "the target folder is the source folder", path=target, hint="choose another -o"
        )
    if target.exists() and not target.is_dir():
        raise DatasetError("a file is in the way of the target folder", path=target)
    if force:
        return
    if _non_empty(target):
        raise DatasetError(
            "target folder already exists and is not empty",
            path=target,
            hint="use --force to write into it, or choose another -o",
        )
    for sibling in out.iterdir():
        parsed = parse_folder_name(sibling.name)
        if parsed and parsed[1] == concept and sibling != target and _non_empty(sibling):
            raise DatasetError(
                f"{sibling.name} already holds this concept; kohya would train both folders",
                path=sibling,
                hint="remove or rename it, use --force, or choose another -o",
            )


def _build(
    usable: list[tuple[Path, ImageProbe]],
    src: Path,
    work: Path,
    *,
    trigger: str | None,
    link: bool,
    convert: bool,
    fix_orientation: bool,
    caption_ext: str,
    progress: ProgressFn | None,
    skipped: list[tuple[str, str]],
) -> dict[str, int]:
    counts = {"copied": 0, "linked": 0, "converted": 0, "rotated": 0, "captions_written": 0}
    used: set[str] = set()
    src_files = {p.name: p for p in list_folder(src).files}
    total = len(usable)
    for done, (path, probe) in enumerate(usable, 1):
        reason = needs_conversion(probe, path.suffix) if convert else None
        rotate = fix_orientation and probe.orientation != 1
        if reason or rotate:
            ext = ".jpg" if not reason and probe.format == "JPEG" else ".png"
        else:
            ext = path.suffix.lower()
        stem = _unique_stem(path.stem, used)
        dest = work / (stem + ext)
        if reason or rotate:
            try:
                reencode(path, dest, rotate=rotate, flatten=convert)
            except UndecodableImage as exc:
                skipped.append((str(path), f"cannot be decoded: {exc}"))
                used.discard(stem.lower())
                if progress:
                    progress(done, total)
                continue
            counts["converted"] += 1
            counts["rotated"] += rotate
        else:
            counts["linked"] += _copy_or_link(path, dest, link)
            counts["copied"] += 1
        text = source_caption(path, src_files, caption_ext, skipped)
        if trigger:
            text = trigger_first(text or "", trigger)
        if text:
            _write_text(work / (stem + caption_ext), text + "\n")
            counts["captions_written"] += 1
        if progress:
            progress(done, total)
    return counts


def _unique_stem(stem: str, used: set[str]) -> str:
    # case-insensitive: a.png and A.png collide on macOS and Windows file systems
    candidate, k = stem, 2
    while candidate.lower() in used:
        candidate, k = f"{stem}_{k}", k + 1
    used.add(candidate.lower())
    return candidate


def _copy_or_link(src: Path, dest: Path, link: bool) -> int:
    if link:
        try:
            os.link(src, dest)
            return 1
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise DatasetError(
                    f"cannot hard-link: {exc.strerror}",
                    path=src,
                    hint="put OUT on the same file system as the images, or drop --link",
                ) from exc
            raise
    shutil.copy2(src, dest)
    return 0


_write_text = write_text_atomic


def _move_into_place(work: Path, target: Path) -> list[str]:
    """Rename the finished folder into place; with --force into an existing one, file by file."""
    notes: list[str] = []
    if not target.exists():
        os.rename(work, target)
        return notes
    built = {p.name for p in work.iterdir()}
    for name in sorted(built):
        os.replace(work / name, target / name)
    left = sorted(p.name for p in target.iterdir() if p.name not in built)
    if left:
        notes.append(
            f"{len(left)} file(s) already in {target.name} were left as they were "
            f"(e.g. {left[0]}); kohya trains on them too"
        )
    return notes
