"""Content hashes of a dataset: which images and captions kohya would read, and their hashes.

The manifest records one of these for the source images and one for the prepared copy;
a run continued later hashes again and refuses (or notes) what changed, file by file.
It is separate from the manifest because it reads the dataset, not the run folder, and
because the stages that copy a train dir list its files with dataset_files too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kohyagen.dataset.layout import CAPTION_EXTENSIONS, IMAGE_EXTENSIONS


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_files(root: Path, *, exclude: Path | None = None) -> list[Path]:
    """Images and caption files kohya could read under root: in root itself and in its
    direct subfolders (the N_name/ layout), sorted; hidden files and `exclude` (e.g. a run
    folder made inside the images folder) left out."""
    # what kohya reads is what decides the training: other files may change freely
    wanted = set(IMAGE_EXTENSIONS) | set(CAPTION_EXTENSIONS)
    excluded = exclude.resolve() if exclude is not None else None

    def entries(folder: Path) -> list[Path]:
        try:
            return [p for p in folder.iterdir() if not p.name.startswith(".")]
        except OSError:
            return []

    files = []
    for entry in entries(root):
        # a run folder made inside the images folder would change its own dataset hash
        if excluded is not None and entry.resolve() == excluded:
            continue
        # one level down only: kohya reads N_name/ folders, never deeper
        children = entries(entry) if entry.is_dir() else [entry]
        files += [p for p in children if p.suffix.lower() in wanted and p.is_file()]
    return sorted(files)


@dataclass(frozen=True)
class DatasetHash:
    digest: str  # one hash over every file's path and content
    files: dict[str, str]  # relative path -> sha256

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "files": self.files}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetHash:
        return cls(data["digest"], dict(data["files"]))


def hash_dataset(root: str | Path, *, exclude: Path | None = None) -> DatasetHash:
    root = Path(root)
    files = {
        p.relative_to(root).as_posix(): _file_sha256(p)
        for p in dataset_files(root, exclude=exclude)
    }
    total = hashlib.sha256()
    for rel, digest in sorted(files.items()):
        # names and contents both: a renamed image changes its caption pairing
        total.update(f"{rel}\0{digest}\n".encode())
    # per-file hashes are kept to say which files changed
    return DatasetHash(total.hexdigest(), files)


def describe_change(old: DatasetHash, new: DatasetHash) -> str:
    """`2 added (a.png, b.png), 1 changed (c.txt)`: what differs between two hashes."""
    added = sorted(set(new.files) - set(old.files))
    removed = sorted(set(old.files) - set(new.files))
    changed = sorted(k for k in set(old.files) & set(new.files) if old.files[k] != new.files[k])
    parts = []
    for label, names in (("added", added), ("removed", removed), ("changed", changed)):
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            parts.append(f"{len(names)} {label} ({shown})")
    return "; ".join(parts) or "no file differs"
