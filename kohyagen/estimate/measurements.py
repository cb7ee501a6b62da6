"""Throughput measured on the user's own runs, so that estimates learn from them.

After a GPU run trains in one attempt, `kohyagen run` records how long the train stage
took per image seen, for that GPU preset and model, in
$XDG_CONFIG_HOME/kohyagen/measured.json (~/.config/kohyagen/measured.json). `kohyagen
estimate` then prefers these figures to the published ones for that GPU and model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kohyagen import safe_io
from kohyagen.run.manifest import now, write_json_atomic

FILE_NAME = "measured.json"
KEEP = 20  # most recent measurements kept per GPU and model


@dataclass(frozen=True)
class Measurement:
    gpu: str
    model: str
    resolution: int
    images_seen: int
    seconds: float  # the whole train stage: loading, caching and steps
    seconds_per_image: float  # training part, loading and caching taken out
    when: str
    run_dir: str


def measurements_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kohyagen" / FILE_NAME


def load(path: Path | None = None) -> list[Measurement]:
    """Recorded measurements; an unreadable file counts as none (it is only a cache)."""
    path = path or measurements_path()
    try:
        data = json.loads(safe_io.read_text(path))
        return [Measurement(**entry) for entry in data.get("measurements", [])]
    except (OSError, ValueError, TypeError, AttributeError):
        return []


def record(measurement: Measurement, path: Path | None = None) -> None:
    path = path or measurements_path()
    entries = load(path)
    entries.append(measurement)
    same = [e for e in entries if (e.gpu, e.model) == (measurement.gpu, measurement.model)]
    drop = {id(e) for e in same[:-KEEP]}
    kept = [e.__dict__ for e in entries if id(e) not in drop]
    write_json_atomic(path, {"measurements": kept})


def for_gpu(gpu: str, model: str, path: Path | None = None) -> list[Measurement]:
    return [m for m in load(path) if m.gpu == gpu and m.model == model]


def _seconds_between(started: str, finished: str) -> float | None:
    try:
        return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    except (TypeError, ValueError):
        return None


def from_manifest(manifest: Any) -> Measurement | None:
    """A measurement from a finished train stage, or None when the run does not make a
    clean one (CPU run, retried attempts, no estimate to take loading time from)."""
    configs = manifest.data.get("configs", {})
    estimate = manifest.data.get("estimate") or {}
    stage = manifest.stage("train")
    gpu = configs.get("gpu")
    if gpu in (None, "cpu") or stage.get("status") != "done":
        return None
    if stage.get("outputs", {}).get("attempts", 1) != 1:
        return None  # an OOM retry changes the settings mid-run: not a clean figure
    seconds = _seconds_between(stage.get("started"), stage.get("finished"))
    seen = (estimate.get("images_x_repeats") or 0) * (estimate.get("epochs") or 0)
    overhead = estimate.get("overhead_minutes")
    if not seconds or seconds <= 0 or not seen or not overhead:
        return None
    loading = 60 * (overhead[0] + overhead[1]) / 2
    training = max(seconds - loading, seconds * 0.5)
    return Measurement(
        gpu=gpu,
        model=str(estimate.get("model")),
        resolution=int(estimate.get("resolution") or 0),
        images_seen=int(seen),
        seconds=seconds,
        seconds_per_image=training / seen,
        when=now(),
        run_dir=str(manifest.run_dir),
    )
