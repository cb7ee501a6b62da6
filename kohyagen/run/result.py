"""What `kohyagen run` hands back: the RunResult, read from the run's manifest.

The result is built from kohyagen.json alone (never from what the stages returned in
memory), so a run that was already finished and one that just ended answer alike. It is
separate from the pipeline so that the CLI and the demo can name the result's type
without importing the stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kohyagen.run.context import RunOptions
from kohyagen.run.manifest import STAGES, Manifest

SUGGESTED_WEIGHT = 0.8


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    manifest: Path
    name: str
    trigger: str
    model: str
    lora: Path | None
    epoch: int | None
    reason: str | None
    summary_json: Path | None
    loss_png: Path | None
    suggested_weight: float
    stages: tuple[tuple[str, str, str | None], ...]
    resumed_from: str | None  # the stage this invocation started at, None for a fresh run
    already_finished: bool = False
    estimate: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()
    gpu: str | None = None  # the GPU preset the configs were made for ("cpu" without one)
    seconds: tuple[tuple[str, float], ...] = ()  # (stage, seconds) of each finished stage
    report_html: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "manifest": str(self.manifest),
            "name": self.name,
            "trigger": self.trigger,
            "model": self.model,
            "lora": str(self.lora) if self.lora else None,
            "epoch": self.epoch,
            "reason": self.reason,
            "summary_json": str(self.summary_json) if self.summary_json else None,
            "loss_png": str(self.loss_png) if self.loss_png else None,
            "suggested_weight": self.suggested_weight,
            "stages": [{"stage": s, "status": st, "note": n} for s, st, n in self.stages],
            "resumed_from": self.resumed_from,
            "already_finished": self.already_finished,
            "estimate": self.estimate,
            "notes": list(self.notes),
            "gpu": self.gpu,
            "seconds": dict(self.seconds),
            "report_html": str(self.report_html) if self.report_html else None,
        }


def stage_durations(manifest: Manifest) -> list[tuple[str, float]]:
    """(stage, seconds) of each stage with both a start and an end, in pipeline order."""
    out = []
    for stage in STAGES:
        record = manifest.stage(stage)
        if record.get("started") and record.get("finished"):
            start = datetime.fromisoformat(record["started"])
            end = datetime.fromisoformat(record["finished"])
            out.append((stage, (end - start).total_seconds()))
    return out


def collect_result(
    manifest: Manifest,
    options: RunOptions,
    resumed_from: str | None,
    already: bool,
    notes: list[str],
) -> RunResult:
    pick = manifest.outputs("pick")
    report = manifest.outputs("report")
    lora = Path(pick["lora"]) if pick.get("lora") else None
    return RunResult(
        run_dir=manifest.run_dir,
        manifest=manifest.path,
        name=options.name,
        trigger=options.trigger,
        model=options.model,
        lora=lora,
        epoch=pick.get("epoch"),
        reason=pick.get("reason"),
        summary_json=Path(report["summary.json"]) if report.get("summary.json") else None,
        loss_png=Path(report["loss.png"]) if report.get("loss.png") else None,
        suggested_weight=SUGGESTED_WEIGHT,
        stages=tuple(manifest.summary()),
        resumed_from=resumed_from,
        already_finished=already,
        estimate=manifest.data.get("estimate") or None,
        notes=tuple(notes),
        gpu=manifest.data.get("configs", {}).get("gpu"),
        seconds=tuple(stage_durations(manifest)),
        report_html=Path(report["report.html"]) if report.get("report.html") else None,
    )
