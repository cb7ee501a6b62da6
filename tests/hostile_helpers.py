"""Helpers of the hostile-input corpus (tests/test_hostile_*.py): run a command the way a
user would, then check that it ended as a known problem and left the user's files alone."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner, Result

from kohyagen.cli import main


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every regular file under root, by relative path (special files by kind)."""
    out: dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            mode = os.lstat(path).st_mode
            rel = str(path.relative_to(root))
            if stat.S_ISREG(mode):
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = f"special {stat.S_IFMT(mode):o}"
    return out


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_known(result: Result, code: int, *needles: str) -> None:
    """The command exited with code, said each needle, and showed no traceback or 'bug'."""
    text = result.output
    assert result.exit_code == code, (result.exit_code, text, result.exception)
    assert "Traceback" not in text and "this is a bug" not in text, text
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), repr(exc)
    for needle in needles:
        assert needle in text, (needle, text)


class Hang(BaseException):
    """Raised by deadline(): not an OSError (TimeoutError is one), so code that handles
    OSError cannot swallow it and block again on the next special file."""


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Turn a hang (a FIFO read never returning) into a test failure, not a stuck suite."""

    def expired(_signum, _frame):
        raise Hang(f"still running after {seconds}s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
