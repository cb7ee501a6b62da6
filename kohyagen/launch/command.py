"""The argv of one training run: `python -m accelerate.commands.launch` and the trainer.

Pure, and a module of its own: the same inputs give the same argv, which the tests pin,
and the run-overhead benchmark builds the very command a user of the bare trainer runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kohyagen.errors import UsageError


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
    # --multi_gpu only with several processes: it asks accelerate for a distributed launch
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
