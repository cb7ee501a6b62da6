"""Launch a training run: find sd-scripts, build the command, run, watch, recover, report.

`build_command` is pure: the same inputs give the same argv, which the tests pin.
`train` runs from a run folder that holds the configs actually used, the raw output
(train.log), each attempt's configs (attempts/N/) and train.json, and writes the report
when the run ends, however it ends.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kohyagen import attempts as cfg
from kohyagen.diagnose import Diagnosis, diagnose_run, find_signature, nan_loss
from kohyagen.errors import (
    ConfigError,
    KohyagenError,
    LintFailed,
    RunStateError,
    SdScriptsNotFound,
    TrainingFailed,
    UsageError,
)
from kohyagen.findings import Finding, Severity, count_errors
from kohyagen.logs import LogParser, LogSummary, StepProgress, is_bad_loss
from kohyagen.process import child_env, run_streaming
from kohyagen.schema import flatten_training_config, load_toml, script_for_config

BACKENDS = ("auto", "kohya", "builtin")
CLONE_HINT = "git clone https://github.com/kohya-ss/sd-scripts vendor/sd-scripts"
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
FINISHED = ("succeeded", "failed", "interrupted")


# --- finding things ------------------------------------------------------------------------


def _is_checkout(path: Path) -> bool:
    return (path / "train_network.py").is_file()


def find_sd_scripts(flag: str | Path | None = None, *, cwd: Path | None = None) -> Path:
    """The sd-scripts checkout: --sd-scripts, then KOHYA_SD_SCRIPTS, then vendor/sd-scripts
    (beside the kohyagen checkout, then in the working folder), then ~/sd-scripts."""
    if flag is not None:
        path = Path(flag).expanduser().resolve()
        if not _is_checkout(path):
            raise SdScriptsNotFound(
                "not a kohya sd-scripts checkout (no train_network.py)", path=path, hint=CLONE_HINT
            )
        return path
    env = os.environ.get("KOHYA_SD_SCRIPTS")
    if env:
        path = Path(env).expanduser().resolve()
        if not _is_checkout(path):
            raise SdScriptsNotFound(
                "KOHYA_SD_SCRIPTS does not point at a kohya sd-scripts checkout "
                "(no train_network.py)",
                path=path,
                hint=CLONE_HINT,
            )
        return path
    cwd = Path(cwd or Path.cwd())
    candidates = [
        _PACKAGE_ROOT / "vendor" / "sd-scripts",
        cwd / "vendor" / "sd-scripts",
        Path.home() / "sd-scripts",
    ]
    for path in candidates:
        if _is_checkout(path):
            return path.resolve()
    raise SdScriptsNotFound(
        "no kohya sd-scripts checkout found (looked at --sd-scripts, KOHYA_SD_SCRIPTS, "
        + ", ".join(str(p) for p in candidates)
        + ")",
        hint=f"{CLONE_HINT}, or pass --sd-scripts PATH, or use --backend builtin",
    )


def find_python(sd_scripts: Path | None, flag: str | Path | None = None) -> str:
    """--python, else the checkout's own venv (venv/ or .venv/), else this interpreter."""
    if flag is not None:
        path = Path(flag).expanduser()
        if not path.exists():
            raise UsageError("the --python interpreter does not exist", path=path)
        return str(path)
    if sd_scripts is not None:
        for venv in ("venv", ".venv"):
            for exe in ("bin/python", "bin/python3", "Scripts/python.exe"):
                candidate = sd_scripts / venv / exe
                if candidate.exists():
                    return str(candidate)
    return sys.executable


# --- the command ----------------------------------------------------------------------------


def build_command(
    *,
    backend: str,
    script: str | Path | None,
    config: str | Path,
    dataset_config: str | Path | None,
    gpus: int = 1,
    mixed_precision: str = "no",
    python: str,
    dynamo_backend: str = "no",
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The argv of one training run.

    accelerate is started as a module of the given interpreter with every choice spelled
    out, so no `accelerate config` file or prompt is needed. backend "builtin" launches
    the module kohyagen.trainer instead of a kohya script.
    """
    if gpus < 1:
        raise UsageError(f"--gpus must be at least 1, got {gpus}")
    if backend not in ("kohya", "builtin"):
        raise UsageError(f"backend must be 'kohya' or 'builtin' here, got {backend!r}")
    argv = [
        str(python),
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(gpus),
        "--num_machines",
        "1",
        "--mixed_precision",
        mixed_precision,
        "--dynamo_backend",
        dynamo_backend,
    ]
    if gpus > 1:
        argv.append("--multi_gpu")
    if backend == "builtin":
        argv += ["-m", "kohyagen.trainer"]
    else:
        if script is None:
            raise UsageError("the kohya backend needs a script path")
        argv.append(str(script))
    argv += ["--config_file", str(config)]
    if dataset_config is not None:
        argv += ["--dataset_config", str(dataset_config)]
    argv += list(extra_args)
    return argv


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


# --- the run folder -------------------------------------------------------------------------


def _read_state(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "train.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def choose_run_dir(output_name: str, run_dir: str | Path | None, *, cwd: Path) -> Path:
    """--run-dir as given; else runs/<output_name>, or runs/<output_name>-N when that one
    already holds a run."""
    if run_dir is not None:
        path = Path(run_dir).expanduser()
        path = path if path.is_absolute() else cwd / path
        state = _read_state(path)
        if state and state.get("status") == "running" and _pid_alive(state.get("pid")):
            raise RunStateError(
                "a training run is already running in this folder",
                path=path,
                hint="wait for it, or stop it, or pass another --run-dir",
            )
        return path
    base = cwd / "runs" / output_name
    candidate, n = base, 1
    while (candidate / "train.json").exists():
        n += 1
        candidate = base.with_name(f"{output_name}-{n}")
    return candidate


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    except OSError:
        return False
    return pid != os.getpid()


def _write_state(run_dir: Path, state: dict) -> None:
    cfg.atomic_write_text(
        run_dir / "train.json", json.dumps(state, indent=2, ensure_ascii=False, default=str)
    )


def _keep_previous_log(run_dir: Path) -> None:
    """A reused run folder keeps its earlier train.log as train-N.log."""
    log = run_dir / "train.log"
    if not log.exists():
        return
    n = 1
    while (run_dir / f"train-{n}.log").exists():
        n += 1
    log.rename(run_dir / f"train-{n}.log")


# --- lint -----------------------------------------------------------------------------------


def _lint(paths: list[Path], cwd: Path) -> list[Finding]:
    try:
        from kohyagen.lint import lint_files
    except ImportError:
        return _schema_only_lint(paths)
    return list(lint_files(paths, cwd=cwd))


def _schema_only_lint(paths: list[Path]) -> list[Finding]:
    """Schema validation alone, for when kohyagen.lint is not available."""
    from kohyagen.schema import is_dataset_config, validator_for

    findings = []
    for path in paths:
        doc = load_toml(path)
        if is_dataset_config(doc.data):
            name, data = "dataset_config", doc.data
        else:
            data, _ = flatten_training_config(doc.data)
            name = script_for_config(doc.text, data)
        for error in validator_for(name).iter_errors(data):
            key = ".".join(str(p) for p in error.absolute_path) or None
            findings.append(Finding(Severity.ERROR, "schema", error.message, str(path), key))
    return findings


# --- training -------------------------------------------------------------------------------


def _resolve_backend(
    backend: str, sd_scripts: str | Path | None, cwd: Path
) -> tuple[str, Path | None]:
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}", hint="use auto, kohya or builtin")
    if backend == "builtin":
        return "builtin", None
    if backend == "kohya" or sd_scripts is not None:
        return "kohya", find_sd_scripts(sd_scripts, cwd=cwd)
    try:
        return "kohya", find_sd_scripts(None, cwd=cwd)
    except SdScriptsNotFound:
        return "builtin", None


class _Watcher:
    """Feeds output to the parser, keeps the state, decides when to stop, reports progress."""

    def __init__(self, attempt: int, started: float, price: float | None, on_progress):
        self.parser = LogParser()
        self.summary = LogSummary()
        self.attempt = attempt
        self.started = started
        self.price = price
        self.on_progress = on_progress
        self.fatal: Diagnosis | None = None
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
        for event in self.parser.feed(text):
            stop = self._apply(event) or stop
        return stop

    def close(self) -> None:
        for event in self.parser.close():
            self._apply(event)

    def _apply(self, event) -> str | None:
        from kohyagen.logs import CheckpointSaved, EpochStarted

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
        return None


def train(
    config: str | Path,
    *,
    dataset_config: str | Path | None = None,
    sd_scripts: str | Path | None = None,
    python: str | Path | None = None,
    gpus: int = 1,
    run_dir: str | Path | None = None,
    retry: bool = True,
    backend: str = "auto",
    price_per_hour: float | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    dry_run: bool = False,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    max_attempts: int = 8,
) -> TrainResult:
    """Train with kohya (or the builtin trainer) and report. See the module docstring."""
    cwd = Path(cwd or Path.cwd()).resolve()
    config_path = Path(config)
    config_path = (config_path if config_path.is_absolute() else cwd / config_path).resolve()
    doc = load_toml(config_path)
    flat, _ = flatten_training_config(doc.data)
    script_name = script_for_config(doc.text, flat)
    if dataset_config is None and isinstance(flat.get("dataset_config"), str):
        dataset_config = flat["dataset_config"]
    dataset_path = None
    if dataset_config is not None:
        dataset_path = Path(dataset_config).expanduser()
        dataset_path = (
            dataset_path if dataset_path.is_absolute() else cwd / dataset_path
        ).resolve()
        if not dataset_path.is_file():
            raise ConfigError("dataset config not found", path=dataset_path, hint="check the path")

    findings = _lint([config_path, *([dataset_path] if dataset_path else [])], cwd)
    if count_errors(findings):
        raise LintFailed(
            f"{count_errors(findings)} error(s) in the configs; not starting",
            findings,
            path=config_path,
            hint=f"run `kohyagen lint {config_path.name}` and fix them",
        )

    chosen, checkout = _resolve_backend(backend, sd_scripts, cwd)
    interpreter = (
        find_python(checkout, python) if chosen == "kohya" else str(python or sys.executable)
    )
    script = checkout / f"{script_name}.py" if checkout is not None else None
    if script is not None and not script.is_file():
        raise SdScriptsNotFound(
            f"{script.name} is missing from the checkout", path=checkout, hint=CLONE_HINT
        )
    output_name = str(flat.get("output_name") or config_path.stem)
    target = choose_run_dir(output_name, run_dir, cwd=cwd)
    mixed = str(flat.get("mixed_precision") or "no")

    def command_for(training: Path, dataset: Path | None) -> list[str]:
        return build_command(
            backend=chosen, script=script, config=training, dataset_config=dataset,
            gpus=gpus, mixed_precision=mixed, python=interpreter,
        )  # fmt: skip

    if dry_run:
        training_copy = target / "training_config.toml"
        dataset_copy = target / "dataset_config.toml" if dataset_path else None
        return TrainResult(
            target, "dry-run", [], None, command_for(training_copy, dataset_copy), lint=findings
        )

    return _run(
        target=target, config_path=config_path, dataset_path=dataset_path, cwd=cwd,
        command_for=command_for, backend=chosen, checkout=checkout, interpreter=interpreter,
        retry=retry, price=price_per_hour, on_progress=on_progress, env=env, gpus=gpus,
        max_attempts=max_attempts, findings=findings,
    )  # fmt: skip


def _run(
    *, target, config_path, dataset_path, cwd, command_for, backend, checkout, interpreter,
    retry, price, on_progress, env, gpus, max_attempts, findings,
) -> TrainResult:  # fmt: skip
    target.mkdir(parents=True, exist_ok=True)
    _keep_previous_log(target)
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
    if backend == "builtin":
        child_environment["PYTHONPATH"] = os.pathsep.join(
            p
            for p in (
                str(Path(__file__).resolve().parent.parent),
                child_environment.get("PYTHONPATH"),
            )
            if p
        )
    started = time.time()
    state: dict[str, Any] = {
        "status": "running",
        "pid": os.getpid(),
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
    while True:
        number += 1
        folder = target / "attempts" / str(number)
        attempt_training, attempt_dataset = cfg.write_attempt(folder, training_doc, dataset_doc)
        command = command_for(
            attempt_training.resolve(), attempt_dataset.resolve() if attempt_dataset else None
        )
        state["command"] = command
        _write_state(target, state)
        watcher = _Watcher(number, started, price, on_progress)
        if number > 1:
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
        if diagnosis is None and outcome.exit_code != 0:
            diagnosis = find_signature(text)
        attempt = Attempt(
            number, command, str(attempt_training), str(attempt_dataset) if attempt_dataset else None,
            changes, outcome.exit_code, outcome.stop_reason, diagnosis, outcome.started_at,
            outcome.ended_at, outcome.log_start, outcome.log_end,
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
    summary = None
    try:
        from kohyagen.report import write_report

        summary = write_report(target)
    except KohyagenError:
        summary = None
    return TrainResult(target, status, done, failure, done[-1].command, summary, cost, findings)
