"""One training run in its folder: attempts, live watching, OOM retries, train.json.

kohyagen.launch.train.train validates and prepares; `run_attempts` runs the trainer until it
succeeds, fails for a reason a smaller configuration cannot fix, or is stopped, and
writes the report at the end however the run ended.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kohyagen.errors import TrainingFailed
from kohyagen.findings import Finding
from kohyagen.launch import attempts as cfg
from kohyagen.launch import resume
from kohyagen.launch.diagnose import OUT_OF_MEMORY, Diagnosis, diagnose_run, nan_loss
from kohyagen.launch.process import child_env, run_streaming
from kohyagen.report.logs import (
    CheckpointSaved,
    EpochStarted,
    Event,
    LogParser,
    LogSummary,
    StepProgress,
    TextLine,
    is_bad_loss,
    log_message,
)

# kohya warnings that change what is trained, worth a line while it runs.
NOTABLE_WARNINGS = ("ignore directory without repeats", "NaN found in latents")

# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What the live line shows; sent to on_progress on every bar update and event."""

    attempt: int
    step: int
    total_steps: int | None
    epoch: int
    total_epochs: int | None
    loss: float | None
    seconds_per_step: float | None
    eta_s: float | None
    elapsed_s: float
    cost: float | None
    message: str | None = None  # an event worth a line of its own (checkpoint, retry...)


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
    log_start: int
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
    attempts: list[Attempt]
    failure: Diagnosis | None
    command: list[str]
    summary: dict | None = None
    cost: float | None = None
    lint: list[Finding] = field(default_factory=list)
    report_error: str | None = None  # the run's result stands even if its report failed

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


def _write_state(run_dir: Path, state: dict) -> None:
    cfg.atomic_write_text(
        run_dir / "train.json", json.dumps(state, indent=2, ensure_ascii=False, default=str)
    )


def _event_files(logging_dir: Any) -> list[Path]:
    if not isinstance(logging_dir, str) or not logging_dir:
        return []
    from kohyagen.report.tensorboard import find_event_files

    return find_event_files(logging_dir)


def _keep_previous_log(run_dir: Path) -> str | None:
    """A reused run folder keeps its earlier train.log as train-N.log (its new name)."""
    log = run_dir / "train.log"
    if not log.exists():
        return None
    n = 1
    while (run_dir / f"train-{n}.log").exists():
        n += 1
    log.rename(run_dir / f"train-{n}.log")
    return f"train-{n}.log"


class _Watcher:
    """Feeds output to the parser, keeps the state, decides when to stop, reports progress."""

    def __init__(
        self,
        attempt: int,
        started: float,
        price: float | None,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.parser = LogParser()
        self.summary = LogSummary()
        self.attempt = attempt
        self.started = started
        self.price = price
        self.on_progress = on_progress
        self.fatal: Diagnosis | None = None
        self.oom_seen = False
        self.tail = ""

    def progress(self, message: str | None = None) -> None:
        if self.on_progress is None:
            return
        s = self.summary
        elapsed = time.time() - self.started
        cost = self.price * elapsed / 3600 if self.price is not None else None
        loss = s.loss_by_step.get(s.step) if s.step else None
        self.on_progress(
            Progress(
                self.attempt, s.step, s.total_steps, s.epoch, s.total_epochs, loss,
                s.seconds_per_step, s.remaining_s, elapsed, cost, message,
            )
        )  # fmt: skip

    def __call__(self, text: str) -> str | None:
        self.tail = (self.tail + text)[-20000:]
        stop = None
        if not self.oom_seen and OUT_OF_MEMORY.search(self.tail[-(len(text) + 200) :]):
            # With several GPUs the other ranks wait forever for the one that died:
            # stop the whole group (a single process is exiting by itself anyway).
            self.oom_seen = True
            stop = "out-of-memory"
        for event in self.parser.feed(text):
            stop = self._apply(event) or stop
        return stop

    def close(self) -> None:
        for event in self.parser.close():
            self._apply(event)

    def _apply(self, event: Event) -> str | None:
        self.summary.apply(event)
        if is_bad_loss(event):
            self.fatal = nan_loss(event.step)
            self.progress(f"loss is NaN at step {event.step}: stopping")
            return "nan-loss"
        if isinstance(event, StepProgress):
            self.progress()
        elif isinstance(event, EpochStarted):
            self.progress(f"epoch {event.epoch}/{event.total}")
        elif isinstance(event, CheckpointSaved):
            self.progress(f"saved {Path(event.path).name}")
        elif isinstance(event, TextLine) and any(w in event.text for w in NOTABLE_WARNINGS):
            self.progress(f"kohya: {log_message(event.text)}")
        return None


def run_attempts(
    *,
    target: Path,
    config_path: Path,
    dataset_path: Path | None,
    cwd: Path,
    command_for: Callable[[Path, Path | None], list[str]],
    backend: str,
    checkout: Path | None,
    interpreter: str,
    retry: bool,
    price: float | None,
    on_progress: Callable[[Progress], None] | None,
    env: dict[str, str] | None,
    gpus: int,
    max_attempts: int,
    findings: list[Finding],
) -> TrainResult:
    """Copy the configs into target, run attempts until one succeeds or retrying cannot
    help, record train.json and write the report."""
    target.mkdir(parents=True, exist_ok=True)
    previous = resume.read_state(target)
    previous_log = _keep_previous_log(target)
    log_path = target / "train.log"
    training_copy = target / "training_config.toml"
    dataset_copy = target / "dataset_config.toml" if dataset_path else None
    # The copies are written even when the sources are these very files: paths become absolute.
    dataset_doc = (
        cfg.copy_dataset_config(dataset_path, dataset_copy, base=cwd) if dataset_path else None
    )
    training_doc = cfg.copy_training_config(
        config_path,
        training_copy,
        base=cwd,
        dataset_copy=dataset_copy.resolve() if dataset_copy else None,
    )
    child_environment = child_env(env)
    source_root = Path(__file__).resolve().parents[2]
    if backend == "builtin" and (source_root / "pyproject.toml").is_file():
        # a source checkout (not an installed package): let the trainer import kohyagen
        child_environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(source_root), child_environment.get("PYTHONPATH")) if p
        )
    started = time.time()
    state: dict[str, Any] = {
        "status": "running",
        "pid": os.getpid(),
        "run_dir": str(target.resolve()),  # a copy elsewhere reads its own files (report.origin)
        "backend": backend,
        "sd_scripts": str(checkout) if checkout else None,
        "python": interpreter,
        "gpus": gpus,
        "source_config": str(config_path),
        "source_dataset_config": str(dataset_path) if dataset_path else None,
        "price_per_hour": price,
        "started_at": started,
        "attempts": [],
    }
    done: list[Attempt] = []
    changes: list[dict] = []
    failure: Diagnosis | None = None
    status = "failed"
    number = 0
    try:
        while True:
            number += 1
            folder = target / "attempts" / str(number)
            attempt_training, attempt_dataset = cfg.write_attempt(folder, training_doc, dataset_doc)
            command = command_for(
                attempt_training.resolve(), attempt_dataset.resolve() if attempt_dataset else None
            )
            state["command"] = command
            if number == 1 and "--resume" in command:
                state["earlier_sessions"] = resume.earlier_sessions(previous, previous_log)
            logging_dir = cfg.option(training_doc, "logging_dir")
            events_before = set(_event_files(logging_dir))
            # A provisional entry, so that a report made while it runs reads this attempt.
            state["attempts"] = [a.to_dict() for a in done] + [
                {
                    "number": number,
                    "command": command,
                    "started_at": time.time(),
                    "log_start": log_path.stat().st_size if log_path.exists() else 0,
                    "running": True,
                }
            ]
            _write_state(target, state)
            watcher = _Watcher(number, started, price, on_progress)
            if number == 1:
                watcher.progress(f"training in {target} (kohya's raw output: train.log)")
            else:
                watcher.progress(
                    f"attempt {number}: " + ", ".join(f"{c['key']} -> {c['new']}" for c in changes)
                )
            outcome = run_streaming(
                command, cwd=target, env=child_environment, log_path=log_path, on_text=watcher
            )
            watcher.close()
            s = watcher.summary
            text = watcher.tail
            diagnosis = diagnose_run(
                text, outcome.exit_code,
                nan_at_step=s.nan_at_step if outcome.stop_reason == "nan-loss" else None,
                model_saved=s.model_saved or bool(s.checkpoints),
                interrupted=outcome.stop_reason == "interrupted",
            )  # fmt: skip
            attempt = Attempt(
                number, command, str(attempt_training), str(attempt_dataset) if attempt_dataset else None,
                changes, outcome.exit_code, outcome.stop_reason, diagnosis, outcome.started_at,
                outcome.ended_at, outcome.log_start, outcome.log_end,
                [str(p) for p in _event_files(logging_dir) if p not in events_before],
            )  # fmt: skip
            done.append(attempt)
            state["attempts"] = [a.to_dict() for a in done]
            if diagnosis is None:
                status, failure = "succeeded", None
                break
            failure = diagnosis
            status = "interrupted" if diagnosis.code == "interrupted" else "failed"
            if not (retry and diagnosis.retryable) or number >= max_attempts:
                break
            applied = cfg.shrink(training_doc, dataset_doc)
            if not applied:
                break
            changes = [c.to_dict() for c in applied]
    except KeyboardInterrupt:
        # Ctrl-C outside the trainer (between attempts, while diagnosing): the trainer is
        # not running, so the run simply ends here as interrupted.
        status, failure = "interrupted", diagnose_run("", None, interrupted=True)
    # The run folder's configs are the ones that produced the result.
    cfg.write_attempt(target, training_doc, dataset_doc)
    ended = time.time()
    cost = price * (ended - started) / 3600 if price is not None else None
    state.update(
        status=status,
        ended_at=ended,
        duration_s=ended - started,
        cost=None if cost is None or math.isnan(cost) else round(cost, 4),
        failure=failure.to_dict() if failure else None,
    )
    _write_state(target, state)
    summary, report_error = None, None
    try:
        from kohyagen.report.summary import write_report

        summary = write_report(target)
    except Exception as exc:  # the training result matters more than its report
        report_error = f"{type(exc).__name__}: {exc}"
    command = done[-1].command if done else []
    return TrainResult(
        target, status, done, failure, command, summary, cost, findings, report_error
    )
