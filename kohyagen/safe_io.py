"""Reading the user's files safely: regular files only, and never more than a bound.

A caption, a TOML or an image path may name a FIFO (open() blocks until a writer comes),
a device or a link to /dev/zero (a read never ends and exhausts memory). Every reader
opens through here: the open does not block (O_NONBLOCK), the kind of file is checked
on the open descriptor (no race between a check and the open), and the read stops at a
limit. Both refusals are OSErrors, so callers that already report unreadable files
report these too.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

# A caption or a config is a few kilobytes; these bounds are far above any real one.
TEXT_LIMIT = 16 * 1024 * 1024
TOML_LIMIT = 16 * 1024 * 1024


class NotRegularFile(OSError):
    """The path is a FIFO, a device, a socket or a folder, not a file to read."""

    def __init__(self, path: str | Path, kind: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file (a {kind})", str(path))


class FileTooLarge(OSError):
    """The file is larger than what kohyagen reads of that kind of file."""

    def __init__(self, path: str | Path, limit: int) -> None:
        super().__init__(errno.EFBIG, f"larger than {limit // (1024 * 1024)} MB", str(path))


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def open_regular(path: str | Path) -> BinaryIO:
    """path opened for binary reading; NotRegularFile for anything but a regular file.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer;
    on a regular file it changes nothing.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, _kind(mode))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | Path, limit: int = TEXT_LIMIT) -> bytes:
    """The whole regular file, refused (FileTooLarge) when it holds more than limit bytes."""
    with open_regular(path) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(path, limit)
    return data


def read_text(path: str | Path, limit: int = TEXT_LIMIT, encoding: str = "utf-8") -> str:
    """read_bytes decoded; UnicodeDecodeError when it is not text in that encoding."""
    return read_bytes(path, limit).decode(encoding)
