"""safe_io.read_fd: one read for a file of the size fstat gave, every byte otherwise."""

from __future__ import annotations

import os

from kohyagen import safe_io


def _counting_reads(monkeypatch, most: int | None = None) -> list[int]:
    calls: list[int] = []
    real = os.read

    def read(fd: int, n: int) -> bytes:
        calls.append(n)
        return real(fd, n if most is None else min(n, most))

    monkeypatch.setattr(safe_io.os, "read", read)
    return calls


def test_a_file_of_the_size_fstat_gave_is_read_in_one_call(tmp_path, monkeypatch):
    path = tmp_path / "caption.txt"
    path.write_bytes(b"a, b, c\n" * 100)
    calls = _counting_reads(monkeypatch)
    assert safe_io.read_bytes(path) == path.read_bytes()
    assert len(calls) == 1


def test_a_file_that_claims_size_zero_is_read_to_its_end(tmp_path, monkeypatch):
    # files of /proc say 0 bytes and hand out a page per read
    path = tmp_path / "proc-like"
    data = os.urandom(200_000)
    path.write_bytes(data)
    _counting_reads(monkeypatch, most=4096)
    fd, _ = safe_io.open_fd(path)
    try:
        assert safe_io.read_fd(fd, 0, 1 << 20) == data
    finally:
        os.close(fd)


def test_a_file_that_grew_after_fstat_is_read_whole(tmp_path):
    path = tmp_path / "growing"
    path.write_bytes(b"x" * 1000)
    fd, st = safe_io.open_fd(path)
    try:
        path.write_bytes(b"x" * 5000)  # the same inode, longer now
        assert len(safe_io.read_fd(fd, st.st_size, 1 << 20)) == 5000
    finally:
        os.close(fd)


def test_the_limit_still_holds_for_a_file_that_grew(tmp_path):
    path = tmp_path / "growing"
    path.write_bytes(b"x" * 10)
    fd, st = safe_io.open_fd(path)
    try:
        path.write_bytes(b"x" * 100_000)
        assert len(safe_io.read_fd(fd, st.st_size, 50_000)) == 50_001  # the caller refuses it
    finally:
        os.close(fd)
