"""`pick`: rank a run's checkpoints and put the chosen one where a user looks for it.

Kept apart from checkpoints.py because it needs the whole run (summary.load_run), and the
summary itself needs checkpoints: one direction only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kohyagen.report.checkpoints import BEST_SUFFIX, Choice, rank
from kohyagen.report.summary import load_run


def _link_or_copy(source: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, dest)


def best_path_for(choice_path: Path, output_name: str) -> Path:
    return choice_path.with_name(f"{output_name}{BEST_SUFFIX}{choice_path.suffix}")


def pick(run_dir: str | Path, *, by: str = "auto", prune: bool = False) -> Choice:
    """Rank the run's checkpoints, write <output_name>-best.<ext> beside them (a hard link,
    else a copy) and, only when prune is asked for, delete the other checkpoints."""
    run = load_run(run_dir)
    choice = rank(run, by=by)
    best = best_path_for(choice.path, run.output_name)
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
