"""The one exception tree of kohyagen.

Library code raises these; only the CLI turns them into messages and exit codes
(see EXIT_CODES and kohyagen.cli). Every error carries the place it concerns and
the next thing to try, so that the CLI can print one useful line instead of a
traceback.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import ModuleType
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TRAINING_FAILED = 3
# 128 + SIGINT: what shells and CI runners expect of a Ctrl-C
EXIT_INTERRUPTED = 130


class KohyagenError(Exception):
    """Base of every error kohyagen reports to the user.

    message: what went wrong, in one sentence.
    path: the file or folder it concerns, if any.
    hint: the fix or the next step.
    """

    exit_code: int = EXIT_ERROR

    def __init__(
        self, message: str, *, path: str | Path | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        # kept apart from the message so --json output can carry it as its own field
        self.path = Path(path) if path is not None else None
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path is not None else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class UsageError(KohyagenError):
    """Options that contradict each other or cannot be understood."""

    exit_code = EXIT_USAGE


class DatasetError(KohyagenError):
    """The dataset folder is missing, empty or unusable."""


class ConfigError(KohyagenError):
    """A kohya TOML is malformed, invalid, or an override cannot be applied."""


class LintFailed(ConfigError):
    """Linting found errors; the findings are attached, and which kohya version's option
    table judged them (checked_against, in words) when the caller knows it."""

    def __init__(
        self, message: str, findings: list, *, checked_against: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.findings = findings
        self.checked_against = checked_against


class PresetError(KohyagenError):
    """Unknown model or GPU preset name."""


class ModelNotFound(KohyagenError):
    """A base model or a tagger model cannot be found locally or on the hub."""


class TaggingError(KohyagenError):
    """The tagger model or its tag list is unusable."""


class MissingDependency(KohyagenError):
    """An optional extra (e.g. [train]) is needed for this command."""


class SdScriptsNotFound(KohyagenError):
    """No kohya sd-scripts checkout where one was looked for."""


class BudgetExceeded(KohyagenError):
    """The estimated cost is above the user's --budget."""


class RunStateError(KohyagenError):
    """A run directory or its manifest is inconsistent."""


class TrainingFailed(KohyagenError):
    """The training process failed (exit status, or a failure seen in its output)."""

    exit_code = EXIT_TRAINING_FAILED

    def __init__(self, message: str, *, cause: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.cause = cause


class TrainingInterrupted(TrainingFailed):
    """Ctrl-C stopped the training: not a failure of it, so the shell's 130 (a queue,
    which catches TrainingFailed, still counts the item as not done)."""

    exit_code = EXIT_INTERRUPTED


_FREE_SPACE = (
    "free space there (old runs, unused checkpoints: `kohyagen pick --prune`) "
    "and run the command again: it continues where it stopped"
)
# errno -> (what happened, the fix): the OS errors a user can do something about
_OS_PROBLEMS = {
    errno.ENOSPC: ("the disk is full", _FREE_SPACE),
    errno.EDQUOT: ("the disk quota is used up", _FREE_SPACE),
    errno.EROFS: ("the file system is read-only", "pass a folder on a writable disk"),
    errno.EACCES: (
        "permission denied",
        "check the permissions of that path, or pass a folder you can write to",
    ),
    errno.EPERM: (
        "operation not permitted",
        "check the permissions of that path, or pass a folder you can write to",
    ),
    errno.ENAMETOOLONG: (
        "a file name is too long for the file system",
        "use shorter names (--name, --concept, folder and file names)",
    ),
    # a write past `ulimit -f` (RLIMIT_FSIZE; Python ignores SIGXFSZ) or the file
    # system's largest file
    errno.EFBIG: (
        "a file grew larger than this system allows",
        "raise the file size limit (ulimit -f) or write to another disk, and run it again",
    ),
}


class DiskProblem(KohyagenError):
    """A known OS error (disk full, read-only, no permission, name too long)."""


class TrainingDiskProblem(TrainingFailed):
    """The same, while training: exit 3 like every training failure."""


def from_os_error(exc: OSError, *, training: bool = False) -> KohyagenError | None:
    """The KohyagenError for an OS error a user can fix, naming the path; None for others."""
    known = _OS_PROBLEMS.get(exc.errno or 0)
    # safe_io.FileTooLarge (a read kohyagen bounds) shares EFBIG with its own message:
    # only the OS's own EFBIG is the file size limit
    if known is None or (exc.errno == errno.EFBIG and exc.strerror != os.strerror(errno.EFBIG)):
        return None
    what, fix = known
    path = exc.filename if isinstance(exc.filename, (str, Path)) else None
    if training:
        return TrainingDiskProblem(
            f"training stopped: {what}", path=path, hint=fix,
            cause=errno.errorcode.get(exc.errno or 0),
        )
    return DiskProblem(what, path=path, hint=fix)


def require(module: str, extra: str = "train") -> ModuleType:
    """Import an optional dependency or explain which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    # the [train] extra is optional: say which extra installs the module instead of failing deep inside
    except ImportError as exc:
        raise MissingDependency(
            f"this needs the Python package '{module}', which is not installed",
            hint=f"pip install 'kohyagen[{extra}]'",
        ) from exc
