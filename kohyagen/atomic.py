"""Atomic file replacement: readers see the old file or the new one, never half of one.

The temporary file is opened like any other file (mode 0666 less the umask), not with
mkstemp's 0600: configs and captions are the user's files, edited and shared like the
ones they write themselves. (A writer that creates the file itself, such as
safetensors' save_file, keeps its own mode.)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".kohyagen-tmp"


# Most file systems allow 255 bytes per name; a long user file name plus the suffix
# below would otherwise fail with ENAMETOOLONG where the file itself fits.
NAME_MAX = 255


def temp_name(path: Path) -> Path:
    """A hidden sibling of path, unique to this process and call, within NAME_MAX bytes."""
    # beside the target, so os.replace never crosses a file system; hidden, so kohya's glob and
    # the dataset scan skip it; unique, so two writers never share one
    tail = f".{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"
    room = NAME_MAX - 1 - len(tail.encode())
    head = path.name.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return path.with_name(f".{head}{tail}")


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces path, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        # atomic on POSIX and Windows alike, replacing an existing file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


STAGING_PREFIX = ".kohyagen-staging-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, under another user
    return True


def remove_stale_staging(parent: Path) -> list[Path]:
    """Delete staging folders in parent whose process is gone (killed with -9 midway)."""
    import shutil

    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        if not entry.name.startswith(STAGING_PREFIX) or not entry.is_dir():
            continue
        pid = entry.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def make_staging_dir(parent: Path) -> Path:
    """A new hidden folder in parent to build in before one rename puts it in place.

    Named with this process id, so that a later run removes it when this one was killed;
    made with the umask's mode (mkdtemp's 0700 would survive the rename and lock the
    user's own group out of the result).
    """
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(parent)
    path = parent / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace path with text (UTF-8, \\n line ends) in one step."""
    # newline="\n": the same bytes on Windows, so content hashes agree across machines
    with replacing(path) as tmp, open(tmp, "x", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
