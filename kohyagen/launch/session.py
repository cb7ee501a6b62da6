"""One training run in its folder: attempts, live watching, OOM retries, train.json.

kohyagen.launch.train.train validates and prepares; `run_attempts` runs the trainer until it
succeeds, fails for a reason a smaller configuration cannot fix, or is stopped, and
writes the report at the end however the run ended. What it returns is in outcome.py,
how train.json is written in state.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kohyagen.findings import Finding
from kohyagen.launch import attempts as cfg
from kohyagen.launch import resume
from kohyagen.launch.diagnose import Diagnosis, diagnose_run
from kohyagen.launch.outcome import Attempt, TrainResult
from kohyagen.launch.process import child_env, run_streaming
from kohyagen.launch.state import record_end, record_os_error, write_state
from kohyagen.launch.watch import Progress, _Watcher

__all__ = ["run_attempts"]


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


def _copy_configs(
    target: Path, config_path: Path, dataset_path: Path | None, cwd: Path
) -> tuple[Any, Any]:
    """The run folder's copies of both configs, as documents the retries may shrink."""
    training_copy = target / "training_config.toml"
    dataset_copy = target / "dataset_config.toml" if dataset_path else None
    # The copies are written even when the sources are these very files: paths become absolute.
    dataset_doc = (
        cfg.copy_dataset_config(dataset_path, dataset_copy, base=cwd)
        if dataset_path and dataset_copy
        else None
    )
    training_doc = cfg.copy_training_config(
        config_path,
        training_copy,
        base=cwd,
        dataset_copy=dataset_copy.resolve() if dataset_copy else None,
    )
    return training_doc, dataset_doc


def _trainer_env(env: dict[str, str] | None, backend: str) -> dict[str, str]:
    """The trainer's environment; a source checkout's builtin trainer can import kohyagen."""
    child_environment = child_env(env)
    source_root = Path(__file__).resolve().parents[2]
    if backend == "builtin" and (source_root / "pyproject.toml").is_file():
        # a source checkout (not an installed package): let the trainer import kohyagen
        child_environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(source_root), child_environment.get("PYTHONPATH")) if p
        )
    return child_environment


@dataclass
class _Attempts:
    """The attempts of one run: each writes its configs, runs the trainer, is diagnosed."""

    target: Path
    training_doc: Any
    dataset_doc: Any
    command_for: Callable[[Path, Path | None], list[str]]
    environment: dict[str, str]
    state: dict[str, Any]
    price: float | None
    on_progress: Callable[[Progress], None] | None
    done: list[Attempt] = field(default_factory=list)
    # train.json and the renamed train.log of the session a --resume continues
    earlier: tuple[dict[str, Any] | None, str | None] = (None, None)

    @property
    def log_path(self) -> Path:
        return self.target / "train.log"

    def run(self, number: int, changes: list[dict]) -> Attempt:
        """Attempt `number`, with the config changes made after the previous one failed."""
        folder = self.target / "attempts" / str(number)
        attempt_training, attempt_dataset = cfg.write_attempt(
            folder, self.training_doc, self.dataset_doc
        )
        command = self.command_for(
            attempt_training.resolve(), attempt_dataset.resolve() if attempt_dataset else None
        )
        self.state["command"] = command
        if number == 1 and "--resume" in command:
            self.state["earlier_sessions"] = resume.earlier_sessions(*self.earlier)
        logging_dir = cfg.option(self.training_doc, "logging_dir")
        events_before = set(_event_files(logging_dir))
        self._record_running(number, command)
        watcher = _Watcher(number, self.state["started_at"], self.price, self.on_progress)
        if number == 1:
            watcher.progress(f"training in {self.target} (kohya's raw output: train.log)")
        else:
            watcher.progress(
                f"attempt {number}: " + ", ".join(f"{c['key']} -> {c['new']}" for c in changes)
            )
        outcome = run_streaming(
            command, cwd=self.target, env=self.environment, log_path=self.log_path,
            on_text=watcher, on_start=self._record_group,
        )  # fmt: skip
        watcher.close()
        s = watcher.summary
        diagnosis = diagnose_run(
            watcher.tail, outcome.exit_code,
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
        self.done.append(attempt)
        self.state["attempts"] = [a.to_dict() for a in self.done]
        return attempt

    def _record_running(self, number: int, command: list[str]) -> None:
        """A provisional entry, so that a report made while it runs reads this attempt."""
        log_path = self.log_path
        self.state["attempts"] = [a.to_dict() for a in self.done] + [
            {
                "number": number,
                "command": command,
                "started_at": time.time(),
                "log_start": log_path.stat().st_size if log_path.exists() else 0,
                "running": True,
            }
        ]
        write_state(self.target, self.state)

    def _record_group(self, pid: int) -> None:
        """The trainer's process group in train.json: the trainer runs in a session of its
        own, so a kill -9 of kohyagen leaves it training, and only its group tells the
        next run in this folder (run_folder.choose_run_dir) that the folder is still busy."""
        self.state["trainer_group"] = pid
        write_state(self.target, self.state)

    def run_until_done(self, retry: bool, max_attempts: int) -> tuple[str, Diagnosis | None]:
        """Attempts until one succeeds or a retry cannot help; the status and the failure."""
        changes: list[dict] = []
        failure: Diagnosis | None = None
        status = "failed"
        number = 0
        try:
            while True:
                number += 1
                diagnosis = self.run(number, changes).diagnosis
                if diagnosis is None:
                    return "succeeded", None
                failure = diagnosis
                status = "interrupted" if diagnosis.code == "interrupted" else "failed"
                if not (retry and diagnosis.retryable) or number >= max_attempts:
                    break
                applied = cfg.shrink(self.training_doc, self.dataset_doc)
                if not applied:
                    break
                changes = [c.to_dict() for c in applied]
        except KeyboardInterrupt:
            # Ctrl-C outside the trainer (between attempts, while diagnosing): the trainer is
            # not running, so the run simply ends here as interrupted.
            status, failure = "interrupted", diagnose_run("", None, interrupted=True)
        return status, failure


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
    training_doc, dataset_doc = _copy_configs(target, config_path, dataset_path, cwd)
    child_environment = _trainer_env(env, backend)
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
    attempts = _Attempts(
        target, training_doc, dataset_doc, command_for, child_environment, state, price, on_progress
    )
    # a resumed training keeps the sessions before it: report and pick read them too
    attempts.earlier = (previous, previous_log)
    status, failure = _run_recorded(attempts, retry, max_attempts)
    # The run folder's configs are the ones that produced the result.
    cfg.write_attempt(target, training_doc, dataset_doc)
    cost = record_end(target, state, status, failure)
    summary, report_error = _report(target)
    done = attempts.done
    command = done[-1].command if done else []
    return TrainResult(
        target, status, done, failure, command, summary, cost, findings, report_error
    )


def _report(target: Path) -> tuple[dict[str, Any] | None, str | None]:
    """summary.json and the rest of the report, or why it could not be written."""
    try:
        from kohyagen.report.summary import write_report

        return write_report(target), None
    except Exception as exc:  # the training result matters more than its report
        return None, f"{type(exc).__name__}: {exc}"


def _run_recorded(
    attempts: _Attempts, retry: bool, max_attempts: int
) -> tuple[str, Diagnosis | None]:
    """run_until_done; an OS error that escapes it is recorded in train.json, then raised."""
    try:
        return attempts.run_until_done(retry, max_attempts)
    except OSError as exc:
        # A full disk (or another OS error) while writing the log or an attempt's configs:
        # train.json must not go on saying "running"; the CLI turns exc into exit 3.
        record_os_error(attempts.target, attempts.state, exc)
        raise
