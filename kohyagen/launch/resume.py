"""What a resumed training keeps of the sessions before it.

kohya's --resume continues from a saved state, in a new process: kohyagen starts a new
train.json for it, and without a record of the earlier sessions a report would see only
the epochs trained after the resume (their checkpoints look older than the run, their
TensorBoard files belong to another attempt). Each resumed session carries the earlier
ones forward in train.json's "earlier_sessions", which report and pick read too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kohyagen import safe_io


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """train.json of run_dir as it was before this session, or None."""
    try:
        data = json.loads(safe_io.read_text(run_dir / "train.json"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def earlier_sessions(previous: dict[str, Any] | None, log: str | None) -> list[dict[str, Any]]:
    """The sessions before this one, oldest first: when each ran, its event files, its log."""
    if not previous:
        return []
    sessions = [s for s in previous.get("earlier_sessions") or [] if isinstance(s, dict)]
    files = [
        f
        for attempt in previous.get("attempts") or []
        if isinstance(attempt, dict)
        for f in attempt.get("event_files") or []
        if isinstance(f, str)
    ]
    sessions.append(
        {
            "started_at": previous.get("started_at"),
            "ended_at": previous.get("ended_at"),
            "status": previous.get("status"),
            "event_files": files,
            "log": log,
        }
    )
    return sessions


def sessions_before(state: dict | None) -> list[dict]:
    """The sessions before a resume recorded in state, oldest first."""
    return [s for s in (state or {}).get("earlier_sessions") or [] if isinstance(s, dict)]


def first_start(state: dict | None) -> float | None:
    """When the training began: its first session's start, across resumes."""
    starts = [s.get("started_at") for s in sessions_before(state)]
    starts.append(((state or {}).get("attempts") or [{}])[0].get("started_at"))
    numbers = [t for t in starts if isinstance(t, (int, float)) and not isinstance(t, bool)]
    return min(numbers) if numbers else None
