"""Where a run folder was made, and reading a copied or moved one in its new place.

kohya's configs hold absolute paths, so a run folder copied elsewhere still points at
the original's output_dir and logs. Reading (report) and acting (pick, pick --prune)
must use the copy's own files, or a prune on a copy deletes the original's
checkpoints. The folder records where it was made (train.json "run_dir", or the run
manifest's "run_dir"); paths under that place are read under the new one, as
`kohyagen run` rewrites them when it finds a moved folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kohyagen import safe_io

PATH_KEYS = ("output_dir", "logging_dir")


def made_in(run_dir: Path, state: dict | None) -> str | None:
    """The absolute folder this run folder was made in, if it recorded one."""
    recorded = (state or {}).get("run_dir")
    if not isinstance(recorded, str):
        manifest = _json_object(run_dir / "kohyagen.json")
        recorded = manifest.get("run_dir") if manifest else None
    return recorded if isinstance(recorded, str) and os.path.isabs(recorded) else None


def damaged_records(run_dir: Path) -> list[str]:
    """The records of where the folder was made (train.json, kohyagen.json) that are
    there but cannot be read: a folder without them is a plain kohya one, one whose
    records are damaged may be a copy that no longer says so."""
    return [
        name
        for name in ("train.json", "kohyagen.json")
        if os.path.lexists(run_dir / name) and _json_object(run_dir / name) is None
    ]


def _json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in path; None when it is missing, unreadable (a FIFO, a folder),
    not JSON, or JSON of another shape."""
    try:
        data = json.loads(safe_io.read_text(path))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def moved_path(value: str, old: str, new: str) -> str:
    """value, moved from under old to under new (whole path components only)."""
    if value == old:
        return new
    for sep in {os.sep, "/"}:
        if value.startswith(old.rstrip(sep) + sep):
            return new + value[len(old.rstrip(sep)) :]
    return value


def follow_move(
    run_dir: Path, state: dict | None, training: dict[str, Any]
) -> tuple[dict | None, dict[str, Any], str | None]:
    """(state, training) with paths under the place the folder was made moved under
    run_dir, and that old place (None when the folder was not moved)."""
    old = made_in(run_dir, state)
    new = str(run_dir.resolve())
    if old is None or old == new:
        return state, training, None
    training = dict(training)
    for key in PATH_KEYS:
        if isinstance(training.get(key), str):
            training[key] = moved_path(training[key], old, new)
    if state is not None:
        state = json.loads(json.dumps(state))
        for attempt in [*(state.get("attempts") or []), *(state.get("earlier_sessions") or [])]:
            if isinstance(attempt, dict) and isinstance(attempt.get("event_files"), list):
                attempt["event_files"] = [
                    moved_path(p, old, new) if isinstance(p, str) else p
                    for p in attempt["event_files"]
                ]
    return state, training, old


def inside(path: Path, folder: Path) -> bool:
    """Whether path is folder or below it (both resolved, so links cannot lead out)."""
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True
