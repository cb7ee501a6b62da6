"""What `train` checks before anything runs: the two configs, the backend, the lint.

Every refusal here leaves nothing behind (no run folder, no process): a config of the
wrong kind, a DiT family for the builtin trainer, lint errors. Apart from train.py, which
only strings these steps together and hands the run to the session.

The backend is chosen before the lint: options come and go between sd-scripts versions,
so the kohya backend's configs are judged by the option table of the checkout that will
run them (config.kohya_tables), the builtin trainer's by the bundled 48d368f tables.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from kohyagen.config.kohya_tables import KohyaTables, checked_against
from kohyagen.config.schema import (
    SDXL_TRAIN_NETWORK,
    TRAIN_NETWORK,
    flatten_training_config,
    load_toml,
    script_for_config,
)
from kohyagen.errors import ConfigError, KohyagenError, LintFailed, SdScriptsNotFound, UsageError
from kohyagen.findings import Finding, count_errors
from kohyagen.launch.checkout import CLONE_HINT, find_sd_scripts

BACKENDS = ("auto", "kohya", "builtin")


def _lint(paths: list[Path], cwd: Path, tables: KohyaTables | None) -> list[Finding]:
    # lazily: the linter pulls in presets and disk checks
    from kohyagen.config.lint import LintOptions, lint_files

    return list(lint_files(paths, cwd=cwd, options=LintOptions(tables=tables)))


def checkout_tables(backend: str, checkout: Path | None, python: str) -> KohyaTables | None:
    """The option tables of the checkout the kohya backend will run, built (once per
    commit) in the Python that will run it; None for the builtin trainer."""
    if backend != "kohya" or checkout is None:
        return None
    return KohyaTables(checkout, python)


def resolve_backend(
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
    # auto: kohya when a checkout is found, else the builtin trainer where it can train
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


def read_training_config(config: str | Path, cwd: Path) -> tuple[Path, dict[str, Any], str]:
    """The training config's absolute path, its flat options and the kohya script it is for."""
    config_path = Path(config)
    config_path = (config_path if config_path.is_absolute() else cwd / config_path).resolve()
    doc = load_toml(config_path)
    _refuse_dataset_config(doc.data, config_path)
    flat, _ = flatten_training_config(doc.data)
    return config_path, flat, script_for_config(doc.text, flat)


def dataset_path_of(dataset_config: str | Path | None, flat: dict, cwd: Path) -> Path | None:
    """The dataset config (the one given, else the training config's dataset_config) as an
    absolute path, checked to exist and to be a dataset config."""
    if dataset_config is None and isinstance(flat.get("dataset_config"), str):
        dataset_config = flat["dataset_config"]
    if dataset_config is None:
        return None
    dataset_path = Path(dataset_config).expanduser()
    dataset_path = (dataset_path if dataset_path.is_absolute() else cwd / dataset_path).resolve()
    if not dataset_path.exists():
        raise ConfigError("dataset config not found", path=dataset_path, hint="check the path")
    # load_toml says what else is wrong with it: a folder, a FIFO, not UTF-8
    _refuse_training_config(load_toml(dataset_path).data, dataset_path)
    return dataset_path


def lint_or_refuse(
    config_path: Path, dataset_path: Path | None, cwd: Path, tables: KohyaTables | None = None
) -> tuple[list[Finding], str]:
    """Lint both configs against tables (None: the bundled ones); refuse to start on any
    error. The findings, and which kohya version's options judged them, in words."""
    findings = _lint([config_path, *([dataset_path] if dataset_path else [])], cwd, tables)
    # a checkout whose Python cannot build its table falls back to the bundled one: say so
    version = checked_against(tables, tables.scripts_used if tables else [])
    if count_errors(findings):
        raise LintFailed(
            f"{count_errors(findings)} error(s) in the configs; not starting",
            findings,
            checked_against=version,
            path=config_path,
            hint=f"run `kohyagen lint {shlex.quote(str(config_path))}` and fix them",
        )
    return findings, version
