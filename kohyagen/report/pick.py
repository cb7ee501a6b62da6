"""`pick`: rank a run's checkpoints and put the chosen one where a user looks for it.

Kept apart from checkpoints.py because it needs the whole run (run_folder.load_run), and
loading a run itself needs checkpoints: one direction only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kohyagen.atomic import temp_name
from kohyagen.errors import RunStateError
from kohyagen.report.checkpoints import BEST_SUFFIX, Choice, rank
from kohyagen.report.origin import damaged_records, inside
from kohyagen.report.run_data import RunData
from kohyagen.report.run_folder import load_run


def _link_or_copy(source: Path, dest: Path) -> None:
    tmp = temp_name(dest)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)
        os.replace(tmp, dest)
        # renaming a link onto another link of the same file does nothing (POSIX): a
        # repeated pick of one checkpoint would keep the temp link, a hidden copy each time
        tmp.unlink(missing_ok=True)
    except BaseException:
        tmp.unlink(missing_ok=True)  # repeated or interrupted picks leave no temp files
        raise


def _refuse_outside(run: RunData, paths: list[Path], action: str) -> None:
    """A copied or moved run folder acts only on its own files: the original's
    checkpoints (still named by absolute paths in its configs) are not its to touch.
    Nor does a folder whose records of where it was made are damaged: it may be a copy."""
    damaged = damaged_records(run.run_dir) if run.moved_from is None else []
    if run.moved_from is None and not damaged:
        return
    outside = [p for p in paths if not inside(p, run.run_dir)]
    if not outside:
        return
    why = (
        f"this run folder was copied or moved from {run.moved_from}"
        if run.moved_from is not None
        else f"{' and '.join(damaged)} cannot be read, so pick cannot tell whether this "
        "run folder is a copy"
    )
    raise RunStateError(
        f"{why}, and {outside[0]} is not inside it, so pick will not {action} it",
        path=run.run_dir,
        hint="run pick in the folder that holds the checkpoints, or copy output/ "
        "into this run folder",
    )


def best_path_for(choice_path: Path, output_name: str) -> Path:
    return choice_path.with_name(f"{output_name}{BEST_SUFFIX}{choice_path.suffix}")


def pick(run_dir: str | Path, *, by: str = "auto", prune: bool = False) -> Choice:
    """Rank the run's checkpoints, write <output_name>-best.<ext> beside them (a hard link,
    else a copy) and, only when prune is asked for, delete the other checkpoints."""
    run = load_run(run_dir)
    choice = rank(run, by=by)
    best = best_path_for(choice.path, run.output_name)
    _refuse_outside(run, [best], "write")
    if prune:
        _refuse_outside(run, [cp.path for cp in run.checkpoints], "delete")
    _link_or_copy(choice.path, best)
    pruned = []
    if prune:
        for cp in run.checkpoints:
            if cp.path != choice.path and cp.path.exists():
                cp.path.unlink()
                pruned.append(str(cp.path))
    return Choice(
        choice.path, best, choice.epoch, choice.step, choice.reason, choice.ranking,
        choice.by, choice.verdict, choice.flags, pruned,
    )  # fmt: skip
