"""The run folder a training writes into, and the checkpoints it must not overwrite.

Apart from the launch because both questions are about what earlier runs left on disk
(their train.json, their checkpoints in output_dir), not about this run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kohyagen.errors import RunStateError
from kohyagen.launch.resume import read_state


def choose_run_dir(output_name: str, run_dir: str | Path | None, *, cwd: Path) -> Path:
    """--run-dir as given; else runs/<output_name>, or runs/<output_name>-N when that one
    already holds a run."""
    if run_dir is not None:
        path = Path(run_dir).expanduser()
        # relative to the folder the run starts from, like every path kohya reads
        path = path if path.is_absolute() else cwd / path
        state = read_state(path)
        # a run folder left `running` by a crash is fine to reuse; one whose process lives is not
        if state and state.get("status") == "running":
            _refuse_if_alive(path, state)
        return path
    base = cwd / "runs" / output_name
    candidate, n = base, 1
    # never write into an earlier run's folder: its logs and report are the user's
    while (candidate / "train.json").exists():
        n += 1
        candidate = base.with_name(f"{output_name}-{n}")
    return candidate


def _refuse_if_alive(path: Path, state: dict) -> None:
    if _pid_alive(state.get("pid")):
        raise RunStateError(
            "a training run is already running in this folder",
            path=path,
            hint="wait for it, or stop it, or pass another --run-dir",
        )
    group = state.get("trainer_group")
    # kohyagen killed (kill -9) while its trainer, in a process group of its own, trains on
    if isinstance(group, int) and group > 0 and _group_alive(group):
        raise RunStateError(
            "a training run is already running in this folder: its trainer outlived the "
            "kohyagen that started it",
            path=path,
            hint=f"wait for it, or stop it (kill -- -{group}), or pass another --run-dir",
        )


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)  # signal 0 only checks that a process of the group exists
    except PermissionError:
        return True
    except (OSError, AttributeError):  # AttributeError: no killpg (Windows)
        return False
    return True


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        # signal 0 only checks that the process exists
        os.kill(pid, 0)
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return False
    # our own pid, recorded by an earlier run in this process, is not a live other run
    return pid != os.getpid()


def guard_outputs(flat: dict, cwd: Path, *, overwrite: bool) -> None:
    from kohyagen.report.checkpoints import CHECKPOINT_EXTENSIONS, checkpoint_pattern

    output_dir, name = flat.get("output_dir"), flat.get("output_name") or None
    if not isinstance(output_dir, str):
        return
    folder = Path(output_dir).expanduser()
    folder = folder if folder.is_absolute() else cwd / folder
    if not folder.is_dir():
        return
    # kohya names checkpoints by output_name alone, so a second run with the same name
    # overwrites the first run's files without a word
    pattern = checkpoint_pattern(str(name) if name else None, best=True)
    existing = sorted(
        p for p in folder.iterdir()
        if pattern.fullmatch(p.name) and p.suffix in CHECKPOINT_EXTENSIONS
    )  # fmt: skip
    if not existing:
        return
    if not overwrite:
        shown = ", ".join(p.name for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise RunStateError(
            f"output_dir already holds {len(existing)} checkpoint(s) named {name or 'last'!r} from an "
            f"earlier run ({shown}); kohya would overwrite them",
            path=folder,
            hint="set another output_name or output_dir, move those files, or pass --overwrite",
        )
    for path in existing:
        if path.stem.endswith("-best"):
            # -best may be a hard link to a file kohya is about to rewrite in place
            path.unlink()
