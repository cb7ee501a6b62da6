"""kohya's DreamBooth folder layout: a train dir holding `<repeats>_<class tokens>/` folders.

These rules mirror what sd-scripts does when it scans train_data_dir: only direct
subfolders count, the part before the first `_` must be an integer >= 1 (the
repeats), and the rest, joined back with `_`, is the class tokens used as the
caption of images that have no caption file.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kohyagen.errors import DatasetError

# What sd-scripts reads without optional plugins (train_util.py IMAGE_EXTENSIONS).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Extensions commonly used for captions; kohya's own default is ".caption".
CAPTION_EXTENSIONS: tuple[str, ...] = (".txt", ".caption")
KOHYA_DEFAULT_CAPTION_EXTENSION = ".caption"


# kohya globs "*" + each of these: case-sensitive, so "x.Png" is not read.
KOHYA_SUFFIXES = frozenset([*IMAGE_EXTENSIONS, *(e.upper() for e in IMAGE_EXTENSIONS)])


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_kohya_image_name(path: Path) -> bool:
    """Whether kohya's glob picks this name up: "*" skips hidden names (macOS "._x.png")."""
    return not path.name.startswith(".") and path.suffix in KOHYA_SUFFIXES


def parse_folder_name(name: str) -> tuple[int, str] | None:
    """`10_sks dog` -> (10, "sks dog"); None when kohya would skip the folder."""
    # config_util.py:607-645 splits on the first `_`: `5_my_char` is 5 repeats of `my_char`
    head, _, rest = name.partition("_")
    try:
        repeats = int(head)
    except ValueError:
        return None
    # kohya skips folders with 0 or negative repeats too
    if repeats < 1:
        return None
    return repeats, rest


@dataclass(frozen=True)
class Subset:
    path: Path
    repeats: int
    class_tokens: str
    images: tuple[Path, ...]

    @property
    def name(self) -> str:
        return self.path.name

    def caption_files(self, extension: str) -> list[Path]:
        # os.path.isfile as kohya checks: a caption name too long to exist (a 255-byte
        # image name) or a link loop is no caption, where Path.is_file raises
        return [
            img.with_suffix(extension)
            for img in self.images
            if os.path.isfile(img.with_suffix(extension))
        ]


@dataclass(frozen=True)
class TrainDirLayout:
    root: Path
    subsets: tuple[Subset, ...]
    skipped_dirs: tuple[Path, ...] = field(default_factory=tuple)
    loose_images: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def image_count(self) -> int:
        return sum(len(s.images) for s in self.subsets)

    @property
    def images_x_repeats(self) -> int:
        return sum(len(s.images) * s.repeats for s in self.subsets)

    def caption_extension_counts(self) -> Counter[str]:
        """How many images have a caption file with each known caption extension."""
        counts: Counter[str] = Counter()
        for subset in self.subsets:
            for ext in CAPTION_EXTENSIONS:
                counts[ext] += len(subset.caption_files(ext))
        return counts

    def detect_caption_extension(self) -> str | None:
        """The caption extension most images have, or None when there are no captions."""
        counts = self.caption_extension_counts()
        ext, n = max(
            # a tie goes to .txt, what the WD14 tagger and kohyagen tag write
            counts.items(), key=lambda item: (item[1], item[0] == ".txt"), default=(None, 0)
        )
        return ext if n else None


def list_images(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    # is_file(): unlike kohya's glob, a broken link is left out here (the check reports it)
    return [p for p in entries if is_kohya_image_name(p) and p.is_file()]


def scan_train_dir(root: str | Path) -> TrainDirLayout:
    """Read a kohya train dir. Raises DatasetError when root is not a readable folder."""
    root = Path(root)
    if not root.exists():
        raise DatasetError("dataset folder not found", path=root, hint="check the path")
    if not root.is_dir():
        raise DatasetError(
            "expected a folder of images or of N_name/ folders, got a file",
            path=root,
            hint="pass the folder that contains the images",
        )
    subsets: list[Subset] = []
    skipped: list[Path] = []
    loose: list[Path] = []
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise DatasetError(f"cannot read folder: {exc.strerror}", path=root) from exc
    for entry in entries:
        if entry.is_dir():
            parsed = parse_folder_name(entry.name)
            if parsed is None:
                skipped.append(entry)
                continue
            repeats, tokens = parsed
            subsets.append(Subset(entry, repeats, tokens, tuple(list_images(entry))))
        elif is_kohya_image_name(entry):
            loose.append(entry)
    return TrainDirLayout(root, tuple(subsets), tuple(skipped), tuple(loose))
