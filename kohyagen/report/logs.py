"""Parse kohya's console output: tqdm bars with \\r updates, epoch headers, checkpoint lines.

kohya prints its training bar on stderr (`steps:  50%|█████     | 8/16 [00:14<00:14,
1.83s/it, avr_loss=1.08]`), redrawing it with `\\r` and drawing each step twice (once on
update, once when the postfix changes). Rich log lines from the same process can start on
the same physical line as a bar, validation bars add `ESC[A` cursor moves, and stdout
(`epoch 1/2`, `saving checkpoint: PATH`) interleaves with all of it. So the stream is cut
into segments at every `\\r` or `\\n`, escape sequences are dropped, and each segment is
searched (not matched) for the patterns.

`LogParser` is incremental: feed it chunks split anywhere and it yields the same events
as parsing the whole text at once. A bar still waiting for its terminator is reported
early (so the live line does not lag a step behind) and not reported again when its
terminator arrives. What the events add up to (LogSummary, parse_log) is log_summary.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TypeGuard

# cursor moves and colours: validation bars move the cursor up with ESC[A
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# tqdm's MM:SS or H:MM:SS; `?` before the rate is known
_TIME = r"(?:\d+:)?\d+:\d+|\?"
# kohya's three bars (train_network.py:1357-1359 and the validation ones at 1542-1660);
# the rate is s/it or it/s depending on speed, and the postfix is sorted by tqdm
_BAR = re.compile(
    r"(?P<desc>epoch validation steps|validation steps|steps):\s+(?P<pct>\d+)%\|[^|]*\|\s*"
    r"(?P<n>\d+)/(?P<total>\d+)\s*\[(?P<elapsed>" + _TIME + r")<(?P<remaining>" + _TIME + r")"
    r",\s*(?P<rate>[\d.]+|\?)(?P<unit>s/it|it/s)(?P<postfix>(?:,[^\]\r\n]*)?)\]"
)
# stdout's epoch header, train_network.py:1402
_EPOCH = re.compile(r"\s*epoch (\d+)/(\d+)\s*$")
# train_network.py:1300; rotation's `removing old checkpoint` is train_util.py:5786-5805
_CHECKPOINT = re.compile(r"\s*saving checkpoint: (.+?)\s*$")
_REMOVED = re.compile(r".*removing old checkpoint: (.+?)\s*$")
# kohya's bilingual plan lines (train_network.py:987-1000): the Japanese half varies
_TOTAL_STEPS = re.compile(r"total optimization steps / .*?: (\d+)")
_NUM_EPOCHS = re.compile(r"\s*num epochs / epoch.*?: (\d+)")
# the INFO log at train_network.py:1729: the only sign of a run that finished
_MODEL_SAVED = re.compile(r"\bmodel saved\.")
_POSTFIX_ITEM = re.compile(r"([A-Za-z_][\w ]*?)=([^,]*)")


@dataclass(frozen=True)
class StepProgress:
    """One draw of the training bar."""

    step: int
    total: int
    elapsed_s: float | None
    remaining_s: float | None
    seconds_per_step: float | None
    loss: float | None  # avr_loss: kohya's running average over the last epoch's worth


@dataclass(frozen=True)
class ValidationProgress:
    kind: str  # "epoch" (val_epoch_avg_loss) or "step" (val_avg_loss)
    n: int
    total: int
    loss: float | None


@dataclass(frozen=True)
class EpochStarted:
    epoch: int
    total: int


@dataclass(frozen=True)
class CheckpointSaved:
    path: str


@dataclass(frozen=True)
class CheckpointRemoved:
    path: str


@dataclass(frozen=True)
class PlanLine:
    """The totals kohya prints before training (`total optimization steps`, `num epochs`)."""

    total_steps: int | None = None
    epochs: int | None = None


@dataclass(frozen=True)
class ModelSaved:
    pass


@dataclass(frozen=True)
class TextLine:
    """Any other segment; kept for failure diagnosis."""

    text: str


Event = (
    StepProgress
    | ValidationProgress
    | EpochStarted
    | CheckpointSaved
    | CheckpointRemoved
    | PlanLine
    | ModelSaved
    | TextLine
)


def parse_duration(text: str) -> float | None:
    """tqdm's `MM:SS` or `H:MM:SS`; None for `?`."""
    if text == "?":
        return None
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds


def parse_number(text: str) -> float | None:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return None


def _postfix(text: str) -> dict[str, str]:
    return {key.strip(): value.strip() for key, value in _POSTFIX_ITEM.findall(text)}


def _bar_event(match: re.Match[str]) -> StepProgress | ValidationProgress:
    post = _postfix(match.group("postfix"))
    n, total = int(match.group("n")), int(match.group("total"))
    if match.group("desc") == "steps":
        rate = parse_number(match.group("rate"))
        # tqdm flips to it/s when faster than one step a second
        if rate is not None and match.group("unit") == "it/s":
            rate = 1.0 / rate if rate > 0 else None
        # `nan` parses to float nan, which is how a diverged run is seen
        loss = parse_number(post["avr_loss"]) if "avr_loss" in post else None
        return StepProgress(
            step=n,
            total=total,
            elapsed_s=parse_duration(match.group("elapsed")),
            remaining_s=parse_duration(match.group("remaining")),
            seconds_per_step=rate,
            loss=loss,
        )
    kind = "epoch" if match.group("desc").startswith("epoch") else "step"
    # each validation bar names its loss differently (train_network.py:1542-1581, 1618-1660)
    key = "val_epoch_avg_loss" if kind == "epoch" else "val_avg_loss"
    return ValidationProgress(
        kind=kind, n=n, total=total, loss=parse_number(post[key]) if key in post else None
    )


def parse_segment(segment: str) -> list[Event]:
    """Events in one segment (text between two \\r/\\n), escape sequences removed."""
    text = _ANSI.sub("", segment)
    if not text.strip():
        return []
    bars = list(_BAR.finditer(text))
    # finditer: a segment can hold two bars when a \r was lost in a pipe buffer
    events: list[Event] = [_bar_event(m) for m in bars]
    # What follows the last bar on the same line: a rich log line, `epoch 1/2`, ...
    tail = text[bars[-1].end() :] if bars else text
    if match := _EPOCH.match(tail):
        events.append(EpochStarted(int(match.group(1)), int(match.group(2))))
    elif match := _CHECKPOINT.match(tail):
        events.append(CheckpointSaved(match.group(1)))
    elif match := _REMOVED.match(tail):
        events.append(CheckpointRemoved(match.group(1)))
    elif match := _TOTAL_STEPS.search(tail):
        events.append(PlanLine(total_steps=int(match.group(1))))
    elif match := _NUM_EPOCHS.match(tail):
        events.append(PlanLine(epochs=int(match.group(1))))
    elif _MODEL_SAVED.search(tail):
        events.append(ModelSaved())
    elif tail.strip():
        events.append(TextLine(tail.strip()))
    return events


class LogParser:
    """Incremental parser: feed() text chunks split anywhere; close() at end of stream."""

    def __init__(self) -> None:
        self._buffer = ""
        self._early: Event | None = None

    def _complete(self, segment: str) -> list[Event]:
        found = parse_segment(segment)
        # repr, not ==: a NaN loss never equals itself
        if self._early is not None and found and repr(found[0]) == repr(self._early):
            found = found[1:]
        self._early = None
        return found

    def feed(self, chunk: str) -> list[Event]:
        self._buffer += chunk
        # the last part has no terminator yet: it stays in the buffer for the next chunk
        parts = re.split(r"[\r\n]", self._buffer)
        self._buffer = parts.pop()
        events: list[Event] = []
        for part in parts:
            events += self._complete(part)
        if self._early is None:
            # A bar waits for the next \r before it is terminated; report it now, once.
            text = _ANSI.sub("", self._buffer).rstrip()
            bars = list(_BAR.finditer(text))
            if len(bars) == 1 and bars[0].end() == len(text):
                self._early = _bar_event(bars[0])
                events.append(self._early)
        return events

    def close(self) -> list[Event]:
        rest, self._buffer = self._buffer, ""
        return self._complete(rest)


# kohya logs through a Rich handler (library/utils.py:41-86): time, level, message and a
# right-aligned `file.py:line` column, wrapped at 80 columns when piped
_RICH_PREFIX = re.compile(
    r"^\s*(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+)?(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)?\s*"
)
_RICH_SOURCE = re.compile(r"\s+[\w.]+\.py:\d+\s*$")


def log_message(text: str) -> str:
    """A rich log line without its time, level and `file.py:line` columns."""
    return _RICH_SOURCE.sub("", _RICH_PREFIX.sub("", text, count=1)).strip()


def parse_events(text: str) -> list[Event]:
    parser = LogParser()
    return parser.feed(text) + parser.close()


def is_bad_loss(event: Event) -> TypeGuard[StepProgress]:
    return (
        isinstance(event, StepProgress)
        and event.loss is not None
        and (math.isnan(event.loss) or math.isinf(event.loss))
    )
