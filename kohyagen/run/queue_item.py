"""One item of `kohyagen queue`: what it is, and what its worker process does with it.

An item is a run folder made by `kohyagen run` (it is continued with the pipeline) or a
training config (it is trained, then reported and picked). Recognising an item and
working on it both live here, apart from the queue's scheduling (run.queue), because the
worker runs in its own process (`kohyagen queue-item`) and never sees the other items,
the GPUs or the threads that hand them out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kohyagen.errors import UsageError
from kohyagen.run.manifest import MANIFEST_NAME

RUN_DIR, CONFIG = "run_dir", "config"

Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class QueueItem:
    path: Path
    kind: str  # "run_dir" or "config"
    run_dir: Path  # where its report, checkpoints and queue.log go

    @property
    def label(self) -> str:
        return self.run_dir.name


def classify(item: str | Path) -> QueueItem:
    """A run folder (has kohyagen.json), a folder holding training_config.toml, or a
    training config file."""
    path = Path(item).resolve()
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            return QueueItem(path, RUN_DIR, path)
        if (path / "training_config.toml").is_file():
            return QueueItem(path / "training_config.toml", CONFIG, path)
        raise UsageError(
            "not a kohyagen run folder (no kohyagen.json) nor a folder with training_config.toml",
            path=path,
            hint="queue run folders made by `kohyagen run`, or training configs",
        )
    if path.is_file() and path.suffix == ".toml":
        # a loose style.toml gets its own style/ run folder, so two configs never share one
        run_dir = path.parent if path.name == "training_config.toml" else path.with_suffix("")
        return QueueItem(path, CONFIG, run_dir)
    raise UsageError(
        "queue item not found" if not path.exists() else "not a run folder or a .toml config",
        path=path,
        hint="pass run folders or training config files",
    )


def run_item(
    item: str | Path,
    *,
    backend: str | None = None,
    sd_scripts: str | Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """What one queue worker does (in its own process): continue a run folder with the
    pipeline, or train a config and write its report and choice. Returns a small summary."""
    entry = classify(item)
    if entry.kind == RUN_DIR:
        return _continue_run(entry, backend=backend, sd_scripts=sd_scripts, progress=progress)
    from kohyagen.errors import TrainingFailed
    from kohyagen.launch.train import train
    from kohyagen.report.pick import pick
    from kohyagen.report.summary import write_report

    outcome = train(
        entry.path,
        sd_scripts=sd_scripts,
        run_dir=entry.run_dir,
        backend=backend or "auto",
        on_progress=(lambda event: progress("train", str(event))) if progress else None,
    )
    # a failed or interrupted training becomes the exception the CLI maps to exit 3
    if hasattr(outcome, "raise_for_status"):
        outcome.raise_for_status()
    elif str(getattr(outcome, "status", "succeeded")) not in ("ok", "succeeded"):
        raise TrainingFailed(
            f"training {outcome.status}: see train.log", path=entry.run_dir / "train.log"
        )
    write_report(entry.run_dir)
    choice = pick(entry.run_dir)
    return {"run_dir": str(entry.run_dir), "lora": str(choice.path)}


def _continue_run(
    entry: QueueItem,
    *,
    backend: str | None,
    sd_scripts: str | Path | None,
    progress: Progress | None,
) -> dict[str, Any]:
    """Continue a run folder with the pipeline, from the inputs its manifest recorded."""
    from kohyagen.errors import RunStateError
    from kohyagen.run.manifest import DAMAGED_HINT, Manifest
    from kohyagen.run.pipeline import RunOptions, run_pipeline

    try:
        manifest = Manifest.load(entry.run_dir)
    except RunStateError as exc:
        if exc.hint != DAMAGED_HINT:
            raise
        # the manifest's hint names run's --restart and --run-dir, which queue does not take
        raise RunStateError(exc.message, path=exc.path, hint=(
            "start it over with `kohyagen run IMAGES ... --run-dir "
            f"{entry.run_dir} --restart` (the old files are kept under previous/), "
            "then queue it again"
        )) from exc  # fmt: skip
    assert manifest is not None  # classify saw the file
    inputs = manifest.data.get("inputs", {})
    try:
        options = RunOptions(
            images=Path(inputs["images"]),
            name=inputs["name"],
            trigger=inputs["trigger"],
            model=inputs.get("model", "sd15"),
            base_model=inputs.get("base_model"),
            gpu=inputs.get("gpu", "auto"),
            budget=inputs.get("budget"),
            backend=backend or inputs.get("backend", "auto"),
            run_dir=entry.run_dir,
            epochs=inputs.get("epochs"),
            overrides=tuple(inputs.get("overrides") or ()),
            seed=inputs.get("seed"),
            price_per_hour=inputs.get("price_per_hour"),
            sd_scripts=Path(sd_scripts) if sd_scripts else None,
            model_files=tuple((r, p) for r, p in inputs.get("model_files") or ()),
            fetch=bool(inputs.get("fetch")),
        )
    except KeyError as exc:
        raise RunStateError(f"the manifest lacks the input {exc}", path=manifest.path) from exc
    result = run_pipeline(options, progress=progress)
    return {"run_dir": str(result.run_dir), "lora": str(result.lora) if result.lora else None}
