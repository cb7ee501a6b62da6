"""The run manifest, RUN_DIR/kohyagen.json: what a run was asked to do and how far it got.

It records the inputs, content hashes of the dataset, the resolved configs, the versions
of kohyagen and of sd-scripts, the seed, and for each stage its status, start and end
times and outputs. `kohyagen run` reads it to continue from the first unfinished stage.
Every change is written at once, atomically (temp file + rename), so a run killed at any
moment leaves a readable manifest. The dataset hashes it records are made by
run.dataset_hash, the versions by run.versions.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kohyagen import safe_io
from kohyagen.atomic import temp_name
from kohyagen.errors import RunStateError
from kohyagen.run.versions import collect_versions

MANIFEST_NAME = "kohyagen.json"
FORMAT_VERSION = 1
STAGES = ("check", "prepare", "tag", "config", "estimate", "train", "report", "pick")
PENDING, RUNNING, DONE, SKIPPED, FAILED = "pending", "running", "done", "skipped", "failed"
# a skipped stage had nothing to do: a resumed run moves past it as past a done one
FINISHED = (DONE, SKIPPED)
DAMAGED_HINT = (
    "pass --restart to start the run over (the old files are kept under previous/), "
    "or another --run-dir"
)
_TABLES = ("stages", "inputs", "dataset", "configs")


def _shape_problem(data: dict[str, Any]) -> str | None:
    """What a hand edit broke in a manifest that still parses as JSON, or None."""
    for key in _TABLES:
        if key in data and not isinstance(data[key], dict):
            return f'"{key}" is a {type(data[key]).__name__}, not an object'
    for name, record in (data.get("stages") or {}).items():
        if not isinstance(record, dict) or not isinstance(record.get("status", PENDING), str):
            return f'stage "{name}" is not an object with a status'
        if name in STAGES and not isinstance(record.get("outputs", {}), dict):
            return f'the outputs of stage "{name}" are not an object'
    return None


def now() -> str:
    # UTC: a run folder moves between machines in different zones
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file beside path, flush it to disk, then rename over path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # not mkstemp: its 0600 would survive the rename; the manifest follows the umask
    tmp = temp_name(path)
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False, default=str)
            fh.write("\n")
            fh.flush()
            # on disk before the rename, so a power cut leaves the old or the new file, never an empty one
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- the manifest


class Manifest:
    """The mutable record of one run directory; every change is saved atomically."""

    def __init__(self, run_dir: Path, data: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.data = data

    @property
    def path(self) -> Path:
        return self.run_dir / MANIFEST_NAME

    @classmethod
    def create(cls, run_dir: str | Path, *, inputs: dict[str, Any]) -> Manifest:
        run_dir = Path(run_dir).resolve()
        data = {
            "format": FORMAT_VERSION,
            "run_dir": str(run_dir),  # where it was made: a moved folder is noticed
            "created": now(),
            "updated": now(),
            "inputs": inputs,
            "dataset": {},
            "configs": {},
            # versions are recorded so a later reader knows what made the LoRA
            "versions": collect_versions(),
            "seed": None,
            "stages": {s: {"status": PENDING} for s in STAGES},
        }
        manifest = cls(run_dir, data)
        manifest.save()
        return manifest

    @classmethod
    def load(cls, run_dir: str | Path) -> Manifest | None:
        """The manifest of run_dir, or None when the folder has none."""
        run_dir = Path(run_dir).resolve()
        path = run_dir / MANIFEST_NAME
        if not path.is_file():
            return None
        try:
            data = json.loads(safe_io.read_text(path))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunStateError(
                f"unreadable run manifest: {exc}", path=path, hint=DAMAGED_HINT
            ) from exc
        # refused, not guessed at: a run continued from a misread manifest could redo or skip work
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise RunStateError(
                "not a kohyagen run manifest of a known format", path=path, hint=DAMAGED_HINT
            )
        if (problem := _shape_problem(data)) is not None:
            raise RunStateError(f"damaged run manifest: {problem}", path=path, hint=DAMAGED_HINT)
        stages = data.setdefault("stages", {})
        for stage in STAGES:
            # a manifest from before a stage existed still loads
            stages.setdefault(stage, {"status": PENDING})
        return cls(run_dir, data)

    def save(self) -> None:
        self.data["updated"] = now()
        write_json_atomic(self.path, self.data)

    # stages ---------------------------------------------------------------

    def stage(self, name: str) -> dict[str, Any]:
        if name not in STAGES:
            raise KeyError(name)
        return self.data["stages"][name]

    def status(self, name: str) -> str:
        return self.stage(name).get("status", PENDING)

    def is_finished(self, name: str) -> bool:
        return self.status(name) in FINISHED

    def first_unfinished(self) -> str | None:
        return next((s for s in STAGES if not self.is_finished(s)), None)

    def start(self, name: str) -> None:
        record = self.stage(name)
        # how often a stage was started survives its restart, for the report
        attempts = record.get("attempts", 0) + 1
        record.clear()
        record.update({"status": RUNNING, "started": now(), "attempts": attempts})
        self.save()

    def finish(
        self,
        name: str,
        *,
        outputs: dict[str, Any] | None = None,
        note: str | None = None,
        skipped: bool = False,
    ) -> None:
        record = self.stage(name)
        record.update({"status": SKIPPED if skipped else DONE, "finished": now()})
        record.setdefault("started", record["finished"])
        if outputs is not None:
            record["outputs"] = outputs
        if note:
            record["note"] = note
        # an earlier attempt's error does not describe a stage that then succeeded
        record.pop("error", None)
        self.save()

    def fail(self, name: str, error: str) -> None:
        record = self.stage(name)
        record.update({"status": FAILED, "finished": now(), "error": error})
        self.save()

    def reset_from(self, name: str) -> None:
        """Mark name and every later stage pending again (their records are kept as 'previous')."""
        for stage in STAGES[STAGES.index(name) :]:
            old = self.data["stages"][stage]
            self.data["stages"][stage] = {"status": PENDING}
            if old.get("status") != PENDING:
                # kept, not dropped: what the earlier pass did stays readable
                self.data["stages"][stage]["previous"] = {
                    k: v for k, v in old.items() if k != "previous"
                }
        self.save()

    def outputs(self, name: str) -> dict[str, Any]:
        return self.stage(name).get("outputs", {})

    # other sections -------------------------------------------------------

    def set(self, section: str, value: Any) -> None:
        self.data[section] = value
        self.save()

    def update(self, section: str, **values: Any) -> None:
        self.data.setdefault(section, {}).update(values)
        self.save()

    def summary(self) -> list[tuple[str, str, str | None]]:
        """(stage, status, note or error) in pipeline order."""
        return [
            (s, self.status(s), self.stage(s).get("note") or self.stage(s).get("error"))
            for s in STAGES
        ]
