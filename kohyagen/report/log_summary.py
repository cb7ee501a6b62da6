"""What a whole train.log says about a run: LogSummary, folded from logs.py's events.

Kept apart from logs.py, which turns kohya's console stream into events: this module folds
those events into the run's state, as they arrive for the watcher's live line, and from a
whole train.log for a report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from kohyagen.report.logs import (
    CheckpointRemoved,
    CheckpointSaved,
    EpochStarted,
    Event,
    ModelSaved,
    PlanLine,
    StepProgress,
    TextLine,
    ValidationProgress,
    parse_events,
)


@dataclass
class LogSummary:
    """What a train.log says about a run (all losses as kohya prints them: 3 digits)."""

    total_steps: int | None = None
    total_epochs: int | None = None
    step: int = 0
    epoch: int = 0
    loss_by_step: dict[int, float] = field(default_factory=dict)  # avr_loss per step
    epoch_end_step: dict[int, int] = field(default_factory=dict)
    val_loss_by_epoch: dict[int, float] = field(default_factory=dict)
    val_loss_by_step: dict[int, float] = field(default_factory=dict)
    checkpoints: list[tuple[str, int, int]] = field(default_factory=list)  # path, epoch, step
    removed: list[str] = field(default_factory=list)
    seconds_per_step: float | None = None
    elapsed_s: float | None = None
    remaining_s: float | None = None
    model_saved: bool = False
    nan_at_step: int | None = None
    lines: list[str] = field(default_factory=list)

    def apply(self, event: Event) -> None:
        if isinstance(event, StepProgress):
            self.total_steps = event.total
            self.step = max(self.step, event.step)
            if self.epoch == 0 and event.step > 0:
                self.epoch = 1
            if event.loss is not None and event.step > 0:
                self.loss_by_step[event.step] = event.loss
                if math.isnan(event.loss) or math.isinf(event.loss):
                    # the first bad step is the one to report
                    self.nan_at_step = self.nan_at_step or event.step
            if event.step > 0:
                # the last step seen in an epoch is its end; pick and the plot read epoch losses there
                self.epoch_end_step[self.epoch] = max(
                    self.epoch_end_step.get(self.epoch, 0), event.step
                )
            if event.seconds_per_step is not None and event.step > 0:
                self.seconds_per_step = event.seconds_per_step
            if event.elapsed_s is not None:
                self.elapsed_s = event.elapsed_s
            # not only when known: tqdm's `?` clears a stale estimate
            self.remaining_s = event.remaining_s
        elif isinstance(event, ValidationProgress):
            # The value at n == total is the finished pass; kohya sometimes redraws an
            # old finished bar later, but the current pass's final draw comes after it.
            if event.loss is not None and event.n == event.total:
                if event.kind == "epoch":
                    self.val_loss_by_epoch[max(self.epoch, 1)] = event.loss
                else:
                    self.val_loss_by_step[self.step] = event.loss
        elif isinstance(event, EpochStarted):
            self.epoch = event.epoch
            self.total_epochs = event.total
        elif isinstance(event, CheckpointSaved):
            self.checkpoints.append((event.path, self.epoch, self.step))
        elif isinstance(event, CheckpointRemoved):
            self.removed.append(event.path)
        elif isinstance(event, PlanLine):
            # each plan line carries one of the two totals
            self.total_steps = event.total_steps or self.total_steps
            self.total_epochs = event.epochs or self.total_epochs
        elif isinstance(event, ModelSaved):
            self.model_saved = True
        elif isinstance(event, TextLine):
            self.lines.append(event.text)

    def epoch_losses(self) -> dict[int, float]:
        """avr_loss at the last step of each epoch: kohya's running average then spans
        exactly that epoch, so it equals the epoch-average loss (to 3 digits)."""
        return {
            epoch: self.loss_by_step[step]
            for epoch, step in sorted(self.epoch_end_step.items())
            if step in self.loss_by_step and epoch > 0
        }


def summarize_events(events: Iterable[Event]) -> LogSummary:
    summary = LogSummary()
    for event in events:
        summary.apply(event)
    return summary


def parse_log(text: str) -> LogSummary:
    return summarize_events(parse_events(text))
