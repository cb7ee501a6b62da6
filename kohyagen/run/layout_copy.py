"""A working copy of a user's kohya train dir, for the stages that would write into it.

When the user passes their own N_name/ folders and some images have no caption, the tag
stage must write captions somewhere; the user's folder is not kohyagen's to change, so
the images and captions are linked (or copied) into the run folder and tagged there.
Hard links are safe: kohyagen never writes into an existing file, it replaces captions
by rename (kohyagen.atomic), which gives the copy a new file and leaves the user's alone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kohyagen.atomic import make_staging_dir
from kohyagen.run.dataset_hash import dataset_files


def _link_or_copy(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except OSError:  # another file system, or links not allowed there
        shutil.copy2(source, dest)


def copy_train_dir(source: Path, out: Path, *, exclude: Path) -> int:
    """Link or copy every image and caption kohya reads under source into out, keeping
    the N_name/ folders (and so the repeats and class tokens). Returns the file count."""
    if out.exists():
        shutil.rmtree(out)  # an interrupted copy: ours, made again
    work = make_staging_dir(out.parent)  # removed by the next run if this one is killed
    try:
        files = dataset_files(source, exclude=exclude)
        for path in files:
            _link_or_copy(path, work / path.relative_to(source))
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return len(files)
