"""Launch a training run: check, find sd-scripts, build the command, run, watch, recover, report.

`train` runs from a run folder that holds the configs actually used, the raw output
(train.log), each attempt's configs (attempts/N/) and train.json, and writes the report
when the run ends, however it ends. The steps live beside it: the checks before launch
(preflight), the checkout and its Python (checkout), the argv (command), the run folder
(run_folder) and the attempts loop (session).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kohyagen.launch.checkout import find_python, script_in
from kohyagen.launch.command import build_command
from kohyagen.launch.outcome import TrainResult
from kohyagen.launch.preflight import (
    checkout_tables,
    dataset_path_of,
    lint_or_refuse,
    read_training_config,
    resolve_backend,
)
from kohyagen.launch.run_folder import choose_run_dir, guard_outputs
from kohyagen.launch.session import run_attempts
from kohyagen.launch.watch import Progress

__all__ = ["train"]


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
    overwrite: bool = False,
    extra_args: Sequence[str] = (),
) -> TrainResult:
    """Train with kohya (or the builtin trainer) and report. See the module docstring.

    Refuses to start when output_dir already holds checkpoints of this output_name (kohya
    would overwrite them in place) unless overwrite is given. extra_args go to the trainer
    after the config options (e.g. ["--resume", STATE_DIR]).
    """
    cwd = Path(cwd or Path.cwd()).resolve()
    config_path, flat, script_name = read_training_config(config, cwd)
    dataset_path = dataset_path_of(dataset_config, flat, cwd)
    # the checkout first: its own option table judges the configs, not the bundled one
    chosen, checkout = resolve_backend(backend, sd_scripts, cwd, script_name)
    interpreter = (
        find_python(checkout, python) if chosen == "kohya" else str(python or sys.executable)
    )
    script = script_in(checkout, script_name)
    tables = checkout_tables(chosen, checkout, interpreter)
    findings, version = lint_or_refuse(config_path, dataset_path, cwd, tables)
    target = choose_run_dir(str(flat.get("output_name") or config_path.stem), run_dir, cwd=cwd)
    mixed = str(flat.get("mixed_precision") or "no")

    def command_for(training: Path, dataset: Path | None) -> list[str]:
        return build_command(
            backend=chosen, script=script, config=training, dataset_config=dataset,
            gpus=gpus, mixed_precision=mixed, python=interpreter, extra_args=extra_args,
        )  # fmt: skip

    if dry_run:
        dataset_copy = target / "dataset_config.toml" if dataset_path else None
        command = command_for(target / "training_config.toml", dataset_copy)
        return TrainResult(
            target, "dry-run", [], None, command, lint=findings, checked_against=version
        )

    guard_outputs(flat, cwd, overwrite=overwrite)
    result = run_attempts(
        target=target, config_path=config_path, dataset_path=dataset_path, cwd=cwd,
        command_for=command_for, backend=chosen, checkout=checkout, interpreter=interpreter,
        retry=retry, price=price_per_hour, on_progress=on_progress, env=env, gpus=gpus,
        max_attempts=max_attempts, findings=findings,
    )  # fmt: skip
    return dataclasses.replace(result, checked_against=version)
