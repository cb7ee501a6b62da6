"""What a training run gives back: each attempt (Attempt) and the run's result (TrainResult).

Values of their own, apart from the loop that makes them: the CLI, the run pipeline and
the queue read them without loading the attempts machinery, and train.json stores each
Attempt's to_dict().
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kohyagen.errors import TrainingFailed
from kohyagen.findings import Finding
from kohyagen.launch.diagnose import Diagnosis


@dataclass(frozen=True)
class Attempt:
    number: int
    command: list[str]
    training_config: str
    dataset_config: str | None
    changes: list[dict]
    exit_code: int | None
    stop_reason: str | None
    diagnosis: Diagnosis | None
    started_at: float
    ended_at: float
    log_start: int  # byte offsets of this attempt's output in train.log
    log_end: int
    event_files: list[str] = field(default_factory=list)  # TensorBoard files it wrote

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k != "diagnosis"}
        data["diagnosis"] = self.diagnosis.to_dict() if self.diagnosis else None
        return data


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    status: str  # "succeeded" | "failed" | "interrupted" | "dry-run"
    attempts: list[Attempt]  # in order; the last one decided the status
    failure: Diagnosis | None
    command: list[str]
    summary: dict | None = None
    cost: float | None = None
    lint: list[Finding] = field(default_factory=list)
    report_error: str | None = None  # the run's result stands even if its report failed
    # which kohya version's option table the lint judged the configs by, in words
    checked_against: str | None = None

    def raise_for_status(self) -> None:
        if self.status in ("succeeded", "dry-run"):
            return
        failure = self.failure
        raise TrainingFailed(
            f"training {self.status}: {failure.cause if failure else 'unknown cause'}",
            cause=failure.code if failure else None,
            path=self.run_dir / "train.log",
            hint=failure.fix if failure else None,
        )
