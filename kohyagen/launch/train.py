"""Launch a training run: find sd-scripts, build the command, run, watch, recover, report.

`build_command` is pure: the same inputs give the same argv, which the tests pin.
`train` runs from a run folder that holds the configs actually used, the raw output
(train.log), each attempt's configs (attempts/N/) and train.json, and writes the report
when the run ends, however it ends.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kohyagen.config.schema import (
    SDXL_TRAIN_NETWORK,
    TRAIN_NETWORK,
    flatten_training_config,
    load_toml,
    script_for_config,
)
from kohyagen.errors import (
    ConfigError,
    KohyagenError,
    LintFailed,
    RunStateError,
    SdScriptsNotFound,
    UsageError,
)
from kohyagen.findings import Finding, count_errors
from kohyagen.launch.outcome import Attempt, TrainResult
from kohyagen.launch.session import run_attempts
from kohyagen.launch.watch import Progress

__all__ = [
    "Attempt",
    "Progress",
    "TrainResult",
    "build_command",
    "choose_run_dir",
    "find_python",
    "find_sd_scripts",
    "train",
]

BACKENDS = ("auto", "kohya", "builtin")
CLONE_HINT = "git clone https://github.com/kohya-ss/sd-scripts vendor/sd-scripts"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


# --- finding things ------------------------------------------------------------------------


def _is_checkout(path: Path) -> bool:
    # every sd-scripts checkout has it at the top, whatever the version
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
        # vendor/ beside a kohyagen checkout first: where the README tells people to clone it
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
            # kohya's install guide makes venv/ in the checkout: its pinned torch and diffusers are
            # what the scripts were written for, so they run there and not in kohyagen's venv
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
        # `python -m accelerate.commands.launch`, not the `accelerate` script: it must be the
        # chosen interpreter's accelerate, and a venv's bin/ need not be on PATH
        "accelerate.commands.launch",
        "--num_processes",
        str(gpus),
        # every setting accelerate would otherwise take from `accelerate config` or ask for
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
    # kohya's read_config_from_file: options from the TOML, the command line still wins
    argv += ["--config_file", str(config)]
    if dataset_config is not None:
        argv += ["--dataset_config", str(dataset_config)]
    argv += list(extra_args)
    return argv


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
        # a run folder left `running` by a crash is fine to reuse; one whose process lives is not
        if state and state.get("status") == "running" and _pid_alive(state.get("pid")):
            raise RunStateError(
                "a training run is already running in this folder",
                path=path,
                hint="wait for it, or stop it, or pass another --run-dir",
            )
        return path
    base = cwd / "runs" / output_name
    candidate, n = base, 1
    # never write into an earlier run's folder: its logs and report are the user's
    while (candidate / "train.json").exists():
        n += 1
        candidate = base.with_name(f"{output_name}-{n}")
    return candidate


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        # signal 0 only checks that the process exists
        os.kill(pid, 0)
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return False
    # our own pid, recorded by an earlier run in this process, is not a live other run
    return pid != os.getpid()


def _guard_outputs(flat: dict, cwd: Path, *, overwrite: bool) -> None:
    from kohyagen.report.checkpoints import CHECKPOINT_EXTENSIONS, checkpoint_pattern

    output_dir, name = flat.get("output_dir"), flat.get("output_name") or None
    if not isinstance(output_dir, str):
        return
    folder = Path(output_dir).expanduser()
    folder = folder if folder.is_absolute() else cwd / folder
    if not folder.is_dir():
        return
    # kohya names checkpoints by output_name alone, so a second run with the same name
    # overwrites the first run's files without a word
    pattern = checkpoint_pattern(str(name) if name else None, best=True)
    existing = sorted(
        p for p in folder.iterdir()
        if pattern.fullmatch(p.name) and p.suffix in CHECKPOINT_EXTENSIONS
    )  # fmt: skip
    if not existing:
        return
    if not overwrite:
        shown = ", ".join(p.name for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise RunStateError(
            f"output_dir already holds {len(existing)} checkpoint(s) named {name or 'last'!r} from an "
            f"earlier run ({shown}); kohya would overwrite them",
            path=folder,
            hint="set another output_name or output_dir, move those files, or pass --overwrite",
        )
    for path in existing:
        if path.stem.endswith("-best"):
            # -best may be a hard link to a file kohya is about to rewrite in place
            path.unlink()


# --- lint -----------------------------------------------------------------------------------


def _lint(paths: list[Path], cwd: Path) -> list[Finding]:
    from kohyagen.config.lint import (
        lint_files,  # lazily: the linter pulls in presets and disk checks
    )

    return list(lint_files(paths, cwd=cwd))


# --- training -------------------------------------------------------------------------------


def _resolve_backend(
    backend: str, sd_scripts: str | Path | None, cwd: Path, script_name: str = TRAIN_NETWORK
) -> tuple[str, Path | None]:
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}", hint="use auto, kohya or builtin")
    if backend == "builtin":
        _refuse_builtin(script_name, UsageError)
        return "builtin", None
    # --sd-scripts given means the kohya backend, and a bad path is an error, not a fallback
    if backend == "kohya" or sd_scripts is not None:
        return "kohya", find_sd_scripts(sd_scripts, cwd=cwd)
    try:
        return "kohya", find_sd_scripts(None, cwd=cwd)
    except SdScriptsNotFound:
        _refuse_builtin(script_name, SdScriptsNotFound)
        return "builtin", None


def _refuse_builtin(script_name: str, error: type[KohyagenError]) -> None:
    """The builtin trainer trains SD1.x/2.x/SDXL's U-Net; the DiT families need kohya."""
    if script_name in (TRAIN_NETWORK, SDXL_TRAIN_NETWORK):
        return
    raise error(
        f"this config is for kohya's {script_name}.py (a DiT family); the builtin trainer "
        "trains SD1.x/2.x/SDXL only",
        hint=f"{CLONE_HINT} and run with --backend kohya (accelerate launch {script_name}.py)",
    )


def _refuse_dataset_config(data: dict, path: Path) -> None:
    # kohya itself would start, find no model and crash with a traceback.
    from kohyagen.config.lint import is_dataset_document

    if is_dataset_document(data):
        raise ConfigError(
            "this is a dataset config, not a training config",
            path=path,
            hint="pass the training config (training_config.toml); the dataset config "
            "goes in its dataset_config key or with --dataset-config",
        )


def _refuse_training_config(data: dict, path: Path) -> None:
    # kohya validates a dataset config strictly and would stop on the first training key.
    from kohyagen.config.lint import is_dataset_document

    if not is_dataset_document(data):
        raise ConfigError(
            "this is not a dataset config (no [general] or [[datasets]] tables)",
            path=path,
            hint="pass dataset_config.toml to --dataset-config, or leave it out to use the "
            "training config's dataset_config",
        )


def _read_training_config(config: str | Path, cwd: Path) -> tuple[Path, dict[str, Any], str]:
    """The training config's absolute path, its flat options and the kohya script it is for."""
    config_path = Path(config)
    config_path = (config_path if config_path.is_absolute() else cwd / config_path).resolve()
    doc = load_toml(config_path)
    _refuse_dataset_config(doc.data, config_path)
    flat, _ = flatten_training_config(doc.data)
    return config_path, flat, script_for_config(doc.text, flat)


def _dataset_path(dataset_config: str | Path | None, cwd: Path) -> Path | None:
    """The dataset config's absolute path, checked to exist and to be a dataset config."""
    if dataset_config is None:
        return None
    dataset_path = Path(dataset_config).expanduser()
    dataset_path = (dataset_path if dataset_path.is_absolute() else cwd / dataset_path).resolve()
    if not dataset_path.is_file():
        raise ConfigError("dataset config not found", path=dataset_path, hint="check the path")
    _refuse_training_config(load_toml(dataset_path).data, dataset_path)
    return dataset_path


def _lint_or_refuse(config_path: Path, dataset_path: Path | None, cwd: Path) -> list[Finding]:
    """Lint both configs; refuse to start on any error."""
    findings = _lint([config_path, *([dataset_path] if dataset_path else [])], cwd)
    if count_errors(findings):
        raise LintFailed(
            f"{count_errors(findings)} error(s) in the configs; not starting",
            findings,
            path=config_path,
            hint=f"run `kohyagen lint {shlex.quote(str(config_path))}` and fix them",
        )
    return findings


def _script_in(checkout: Path | None, script_name: str) -> Path | None:
    """The kohya script in the checkout (None for the builtin trainer)."""
    script = checkout / f"{script_name}.py" if checkout is not None else None
    if script is not None and not script.is_file():
        raise SdScriptsNotFound(
            f"{script.name} is missing from the checkout", path=checkout, hint=CLONE_HINT
        )
    return script


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
    config_path, flat, script_name = _read_training_config(config, cwd)
    if dataset_config is None and isinstance(flat.get("dataset_config"), str):
        dataset_config = flat["dataset_config"]
    dataset_path = _dataset_path(dataset_config, cwd)
    findings = _lint_or_refuse(config_path, dataset_path, cwd)

    chosen, checkout = _resolve_backend(backend, sd_scripts, cwd, script_name)
    interpreter = (
        find_python(checkout, python) if chosen == "kohya" else str(python or sys.executable)
    )
    script = _script_in(checkout, script_name)
    target = choose_run_dir(str(flat.get("output_name") or config_path.stem), run_dir, cwd=cwd)
    mixed = str(flat.get("mixed_precision") or "no")

    def command_for(training: Path, dataset: Path | None) -> list[str]:
        return build_command(
            backend=chosen, script=script, config=training, dataset_config=dataset,
            gpus=gpus, mixed_precision=mixed, python=interpreter, extra_args=extra_args,
        )  # fmt: skip

    if dry_run:
        training_copy = target / "training_config.toml"
        dataset_copy = target / "dataset_config.toml" if dataset_path else None
        return TrainResult(
            target, "dry-run", [], None, command_for(training_copy, dataset_copy), lint=findings
        )

    _guard_outputs(flat, cwd, overwrite=overwrite)
    return run_attempts(
        target=target, config_path=config_path, dataset_path=dataset_path, cwd=cwd,
        command_for=command_for, backend=chosen, checkout=checkout, interpreter=interpreter,
        retry=retry, price=price_per_hour, on_progress=on_progress, env=env, gpus=gpus,
        max_attempts=max_attempts, findings=findings,
    )  # fmt: skip
