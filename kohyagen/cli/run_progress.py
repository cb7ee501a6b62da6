"""Progress lines and durations shared by the run concern's commands."""

from __future__ import annotations

import click


class ProgressPrinter:
    """Stage lines on stderr; the trainer's many progress events at most every few seconds."""

    def __init__(self, *, quiet: bool = False, every_s: float = 5.0) -> None:
        self.quiet = quiet
        self.every_s = every_s
        self._last = 0.0

    def __call__(self, stage: str, message: str) -> None:
        import time

        if self.quiet:
            return
        # the trainer reports every step; a line every few seconds is readable, and the first and
        # last lines always show
        if stage == "train" and message not in ("started",) and not message.startswith("done"):
            now = time.monotonic()
            if now - self._last < self.every_s:
                return
            self._last = now
        click.echo(f"[{stage}] {message}", err=True)


def minutes(span: tuple[float, float] | None) -> str:
    if span is None:
        return "unknown"

    def one(m: float) -> str:
        if m < 1:
            return f"{m * 60:.0f} s"
        return f"{m:.0f} min" if m < 90 else f"{m / 60:.1f} h"

    low, high = span
    # a span whose ends round to the same figure is shown as one figure
    return one(low) if round(low) == round(high) else f"{one(low)} – {one(high)}"
