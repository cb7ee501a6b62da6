"""train.json as a run writes it: the running state, and the end however the run ended.

Apart from the attempts loop because the end is written from two places (a run that
finished, and an OS error that escaped the loop) and both must leave the same record;
resume.read_state reads it back.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import time
from pathlib import Path
from typing import Any

from kohyagen.launch import attempts as cfg
from kohyagen.launch.diagnose import Diagnosis


def write_state(run_dir: Path, state: dict) -> None:
    # atomic: a report read while the run writes, or a crash mid-write, sees a whole file
    cfg.atomic_write_text(
        run_dir / "train.json", json.dumps(state, indent=2, ensure_ascii=False, default=str)
    )


def _os_error_diagnosis(exc: OSError) -> Diagnosis:
    """What train.json says when an OS error ended the run: the cause, the path, the fix."""
    from kohyagen.errors import from_os_error

    known = from_os_error(exc, training=True)
    where = f" ({exc.filename})" if exc.filename else ""
    if known is None:
        return Diagnosis("os-error", f"{exc.strerror or exc}{where}", "see the message above")
    cause = known.message.removeprefix("training stopped: ")
    code = errno.errorcode.get(exc.errno or 0, "os-error")
    return Diagnosis(code, cause + where, known.hint or "", evidence=str(exc))


def record_os_error(target: Path, state: dict[str, Any], exc: OSError) -> None:
    """Best effort: mark the run failed with the disk problem; a disk that is still full
    may refuse this write too, and then the original error is what the user must see."""
    for entry in state.get("attempts", []):
        entry.pop("running", None)  # the provisional attempt did not finish
    with contextlib.suppress(OSError):
        record_end(target, state, "failed", _os_error_diagnosis(exc))


def record_end(
    target: Path, state: dict[str, Any], status: str, failure: Diagnosis | None
) -> float | None:
    """Write train.json's final status, duration and cost; the cost."""
    started, price = state["started_at"], state["price_per_hour"]
    ended = time.time()
    cost = price * (ended - started) / 3600 if price is not None else None
    state.update(
        status=status,
        ended_at=ended,
        duration_s=ended - started,
        cost=None if cost is None or math.isnan(cost) else round(cost, 4),
        failure=failure.to_dict() if failure else None,
    )
    write_state(target, state)
    return cost
