"""What `kohyagen run` costs on top of training: the demo pipeline against the bare trainer.

In a temp folder, in the same run:

- pipeline: `kohyagen demo` (check, prepare, tag, config, estimate, train, report, pick on a
  tiny random model, CPU, builtin trainer) once its inputs exist, timed as a whole and per
  stage from its manifest;
- baseline: the bare trainer on the very configs the pipeline used (output and logs
  redirected), started as the launcher starts it (`accelerate launch -m kohyagen.trainer`,
  from kohyagen.launch.command.build_command), which is what a user of the bare trainer would run.

Prints the seconds of each stage, then the ratios train-stage / bare trainer and whole
pipeline / bare trainer. Target: the stages around training add a few seconds, so the
whole pipeline stays within about 1.3x the bare trainer even on this tiny model (on a
real GPU run, where training takes an hour, the ratio is 1.0).

    python benchmarks/run_overhead.py [--epochs 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _bare_configs(run_dir: Path, out: Path) -> tuple[Path, Path]:
    """Copies of the run's configs writing their outputs under out/."""
    import tomlkit

    training = tomlkit.parse((run_dir / "training_config.toml").read_text())
    for table in training.values():
        if isinstance(table, dict):
            if "output_dir" in table:
                table["output_dir"] = str(out / "output")
            if "logging_dir" in table:
                table["logging_dir"] = str(out / "logs")
            for key in ("save_state", "save_last_n_epochs_state"):
                table.pop(key, None)
    dataset = out / "dataset_config.toml"
    shutil.copy(run_dir / "dataset_config.toml", dataset)
    for table in training.values():
        if isinstance(table, dict) and "dataset_config" in table:
            table["dataset_config"] = str(dataset)
    path = out / "training_config.toml"
    path.write_text(tomlkit.dumps(training))
    return path, dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    opts = parser.parse_args()
    work = opts.keep or Path(tempfile.mkdtemp(prefix="kohyagen-bench-run-"))
    work.mkdir(parents=True, exist_ok=True)
    env = _env()
    try:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import sys; from kohyagen.run.demo import prepare_demo; "
             "prepare_demo(sys.argv[1])", str(work / "demo")],
            env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        inputs_s = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "kohyagen", "demo", "--dir", str(work / "demo"),
             "--epochs", str(opts.epochs), "--json"],
            env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        pipeline_s = time.perf_counter() - started

        from kohyagen.run.manifest import Manifest
        from kohyagen.run.result import stage_durations

        manifest = Manifest.load(work / "demo" / "run")
        stages = dict(stage_durations(manifest))

        bare = work / "bare"
        bare.mkdir(exist_ok=True)
        training, dataset = _bare_configs(work / "demo" / "run", bare)
        from kohyagen.launch.command import build_command

        argv = build_command(
            backend="builtin", script=None, config=training, dataset_config=dataset,
            python=sys.executable, mixed_precision="no",
        )  # fmt: skip
        started = time.perf_counter()
        subprocess.run(
            argv, env=env, check=True, cwd=bare, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        bare_s = time.perf_counter() - started
    finally:
        if opts.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print("stage seconds (manifest, 1 s resolution):")
    for stage, seconds in stages.items():
        print(f"  {stage:9s} {seconds:6.0f}")
    print(f"making the tiny model + images: {inputs_s:6.1f} s (demo only, not timed below)")
    print(f"kohyagen demo, whole pipeline:  {pipeline_s:6.1f} s")
    print(f"bare trainer, same configs:     {bare_s:6.1f} s")
    print(f"train stage / bare trainer:     {stages.get('train', 0) / bare_s:6.2f}x")
    print(f"whole pipeline / bare trainer:  {pipeline_s / bare_s:6.2f}x")


if __name__ == "__main__":
    main()
