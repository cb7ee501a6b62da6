"""The values a run's report is made of: its checkpoints and everything read from its folder.

They live apart from the code that reads (summary), ranks (checkpoints) and draws (plot)
them, so that those three can share the types without importing each other in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kohyagen.report.log_summary import LogSummary


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    kind: str  # "epoch" | "step" | "final"
    epoch: int | None
    step: int | None
    bytes: int

    @property
    def name(self) -> str:
        return self.path.name

    def to_dict(self) -> dict:
        return {
            "file": self.path.name,
            "path": str(self.path),
            "kind": self.kind,
            "epoch": self.epoch,
            "step": self.step,
            "bytes": self.bytes,
        }


@dataclass
class RunData:
    run_dir: Path
    state: dict | None
    training: dict[str, Any]
    output_dir: Path | None
    output_name: str
    log: LogSummary | None
    scalars: dict[str, list[tuple[int, float]]]
    event_files: list[Path]
    checkpoints: list[Checkpoint]
    epoch_end_step: dict[int, int]
    train_loss_epoch: dict[int, float]
    val_loss_epoch: dict[int, float]
    val_loss_step: dict[int, float]
    avg_loss_step: dict[int, float]
    current_loss: list[tuple[int, float]]
    noise: float | None = None
    samples: dict[str, list[str]] = field(default_factory=dict)
    script: str = "train_network"
    moved_from: str | None = None  # where the folder was made, when it was copied or moved  # which kohya script trained it (the family's LoRA format)
