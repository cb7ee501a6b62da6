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


_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def open_fd(path: str | Path) -> tuple[int, os.stat_result]:
    """A read-only descriptor of a regular file and its stat; the caller closes it.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer;
    on a regular file it changes nothing. NotRegularFile for anything else.
    """
    fd = os.open(path, _FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(path, _kind(st.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_fd(fd: int, size: int, limit: int) -> bytes:
    """Up to limit + 1 bytes of fd: one os.read for a file of the size fstat gave, no
    buffered file object (a dataset check reads thousands of captions and images)."""
    chunks: list[bytes] = []
    total = 0
    want = min(limit + 1, max(size, 0) + 1)
    while total <= limit:
        ask = min(limit + 1 - total, max(want - total, 65536))
        chunk = os.read(fd, ask)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        # a regular file reads short only at its end: getting all fstat promised and less
        # than asked proves the end without a second read that returns nothing (files of
        # /proc claim size 0 and read a page at a time: they read on to the empty read)
        if len(chunk) < ask and total >= size > 0:
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def open_regular(path: str | Path) -> BinaryIO:
    """path opened for binary reading; NotRegularFile for anything but a regular file."""
    fd, _st = open_fd(path)
    return os.fdopen(fd, "rb")


def read_bytes(path: str | Path, limit: int = TEXT_LIMIT) -> bytes:
    """The whole regular file, refused (FileTooLarge) when it holds more than limit bytes."""
    fd, st = open_fd(path)
    try:
        if st.st_size > limit:
            raise FileTooLarge(path, limit)
        data = read_fd(fd, st.st_size, limit)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileTooLarge(path, limit)
    return data


def read_text(path: str | Path, limit: int = TEXT_LIMIT, encoding: str = "utf-8") -> str:
    """read_bytes decoded; UnicodeDecodeError when it is not text in that encoding."""
    return read_bytes(path, limit).decode(encoding)
