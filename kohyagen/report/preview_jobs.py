"""The values a preview is planned in: its options, one image's job, the result.

Apart from preview.py so that the grid code can name them without importing the planner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kohyagen.report.preview_prompts import PreviewPrompt
from kohyagen.report.run_data import Checkpoint

# the guide's weights; five seeds tell a pattern from chance
DEFAULT_WEIGHTS = (0.5, 0.7, 0.8, 1.0)
DEFAULT_SEEDS = 5


@dataclass(frozen=True)
class PreviewOptions:
    checkpoints: str = "best"  # "best", "all" or epochs "2,4,6"
    weights: tuple[float, ...] = DEFAULT_WEIGHTS
    seeds: int = DEFAULT_SEEDS
    prompts: Path | None = None  # kohya-format prompt file; default: the run's own
    steps: int | None = None  # overrides each prompt's --s
    trigger: str | None = None  # default: the run's trigger (kohyagen.json)


@dataclass(frozen=True)
class Job:
    """One image: a checkpoint (None: the base model) at a weight, one prompt, one seed."""

    checkpoint: Checkpoint | None
    weight: float | None
    prompt: PreviewPrompt
    seed: int
    path: Path


@dataclass(frozen=True)
class BaseModel:
    source: str
    sdxl: bool
    v2: bool
    v_parameterization: bool
    sampler: str


@dataclass
class PreviewResult:
    folder: Path
    index: Path
    total: int
    drawn: int
    grids: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder), "index": str(self.index), "images": self.total,
            "drawn": self.drawn, "cached": self.total - self.drawn,
            "grids": [str(g) for g in self.grids],
        }  # fmt: skip
