"""What every stage of `kohyagen run` is given: the run's options and its context.

These sit in their own module so that the pipeline, which runs the stages, and the stages
themselves can both name them without importing each other in a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kohyagen.run.manifest import Manifest

Progress = Callable[[str, str], None]
Confirm = Callable[[Any], bool]


@dataclass
class RunContext:
    options: RunOptions
    manifest: Manifest
    run_dir: Path
    progress: Progress
    confirm: Confirm | None
    notes: list[str] = field(default_factory=list)

    def say(self, stage: str, message: str) -> None:
        self.progress(stage, message)

    def out(self, stage: str) -> dict[str, Any]:
        return self.manifest.outputs(stage)

    def train_dir(self) -> Path:
        """The folder kohya trains from: prepare's output, else the images as given."""
        prepared = self.out("prepare").get("train_dir")
        return Path(prepared) if prepared else Path(self.options.images).resolve()


def local_or_repo(base_model: str | None) -> str | None:
    """A local model as its absolute path (so ./m and /abs/m are one input); else as given."""
    if base_model and Path(base_model).expanduser().exists():
        return str(Path(base_model).expanduser().resolve())
    return base_model


@dataclass(frozen=True)
class RunOptions:
    images: Path
    name: str
    trigger: str
    model: str = "sd15"
    base_model: str | None = None
    gpu: str = "auto"  # a GPU preset name, "cpu" or "auto"
    budget: float | None = None
    backend: str = "auto"
    run_dir: Path | None = None
    epochs: int | None = None
    overrides: tuple[str, ...] = ()
    seed: int | None = None
    price_per_hour: float | None = None
    prices_file: Path | None = None
    sd_scripts: Path | None = None
    restart: bool = False
    tagger: str | None = None  # the tag stage's model (None: the default WD14 tagger)
    # a DiT family's other model files, (role, path or hf: spec) pairs; fetch downloads
    # the public ones not given (kohyagen.config.model_files)
    model_files: tuple[tuple[str, str], ...] = ()
    fetch: bool = False

    def resolved_run_dir(self) -> Path:
        return (self.run_dir or Path("runs") / self.name).resolve()

    def identity(self) -> dict[str, Any]:
        return {
            "images": str(Path(self.images).resolve()),
            "name": self.name,
            "trigger": self.trigger,
            "model": self.model,
            "base_model": local_or_repo(self.base_model),
            "epochs": self.epochs,
            "overrides": list(self.overrides),
            "seed": self.seed,
            # None, not [], without model files: a run folder made before they were an
            # input records none, and must still continue
            "model_files": [[r, local_or_repo(p)] for r, p in sorted(self.model_files)] or None,
        }

    def to_inputs(self) -> dict[str, Any]:
        return {
            **self.identity(),
            "gpu": self.gpu,
            "budget": self.budget,
            "backend": self.backend,
            "price_per_hour": self.price_per_hour,
            "fetch": self.fetch,
        }
