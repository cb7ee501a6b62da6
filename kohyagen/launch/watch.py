"""Watching a running trainer: its output parsed as it comes, the live progress, when to stop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kohyagen.launch.diagnose import Diagnosis, nan_loss
from kohyagen.launch.signatures import OUT_OF_MEMORY
from kohyagen.report.log_summary import LogSummary
from kohyagen.report.logs import (
    CheckpointSaved,
    EpochStarted,
    Event,
    LogParser,
    StepProgress,
    TextLine,
    is_bad_loss,
    log_message,
)

# kohya warnings that change what is trained, worth a line while it runs.
NOTABLE_WARNINGS = ("ignore directory without repeats", "NaN found in latents")


@dataclass(frozen=True)
class Progress:
    """What the live line shows; sent to on_progress on every bar update and event."""

    attempt: int
    step: int
    total_steps: int | None
    epoch: int
    total_epochs: int | None
    loss: float | None
    seconds_per_step: float | None
    eta_s: float | None
    elapsed_s: float
    cost: float | None
    message: str | None = None  # an event worth a line of its own (checkpoint, retry...)


class _Watcher:
    """Feeds output to the parser, keeps the state, decides when to stop, reports progress."""

    def __init__(
        self,
        attempt: int,
        started: float,
        price: float | None,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.parser = LogParser()
        self.summary = LogSummary()
        self.attempt = attempt
        self.started = started
        self.price = price
        self.on_progress = on_progress
        self.fatal: Diagnosis | None = None
        self.oom_seen = False
        self.tail = ""

    def progress(self, message: str | None = None) -> None:
        if self.on_progress is None:
            return
        s = self.summary
        elapsed = time.time() - self.started
        cost = self.price * elapsed / 3600 if self.price is not None else None
        loss = s.loss_by_step.get(s.step) if s.step else None
        self.on_progress(
            Progress(
                self.attempt, s.step, s.total_steps, s.epoch, s.total_epochs, loss,
                s.seconds_per_step, s.remaining_s, elapsed, cost, message,
            )
        )  # fmt: skip

    def __call__(self, text: str) -> str | None:
        self.tail = (self.tail + text)[-20000:]
        stop = None
        if not self.oom_seen and OUT_OF_MEMORY.search(self.tail[-(len(text) + 200) :]):
            # With several GPUs the other ranks wait forever for the one that died:
            # stop the whole group (a single process is exiting by itself anyway).
            self.oom_seen = True
            stop = "out-of-memory"
        for event in self.parser.feed(text):
            stop = self._apply(event) or stop
        return stop

    def close(self) -> None:
        for event in self.parser.close():
            self._apply(event)

    def _apply(self, event: Event) -> str | None:
        self.summary.apply(event)
        if is_bad_loss(event):
            self.fatal = nan_loss(event.step)
            self.progress(f"loss is NaN at step {event.step}: stopping")
            return "nan-loss"
        if isinstance(event, StepProgress):
            self.progress()
        elif isinstance(event, EpochStarted):
            self.progress(f"epoch {event.epoch}/{event.total}")
        elif isinstance(event, CheckpointSaved):
            self.progress(f"saved {Path(event.path).name}")
        elif isinstance(event, TextLine) and any(w in event.text for w in NOTABLE_WARNINGS):
            self.progress(f"kohya: {log_message(event.text)}")
        return None
