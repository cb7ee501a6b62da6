"""Recognise how a kohya run failed from its output, and say the cause and the fix.

kohya rarely says clearly what went wrong: it exits 0 when it found no images, never
notices a NaN loss, and most mistakes surface as a traceback deep in a library. The
known messages are the table in signatures.py; this module matches them against the
output and adds what no single line shows (an exit status, a NaN loss, a missing model).

Rich log lines wrap at the console width, so text is searched with whitespace runs
(newlines included) collapsed to one space.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from kohyagen.launch.signatures import SIGNATURES

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class Diagnosis:
    code: str  # stable identifier, e.g. "out-of-memory", "no-data"
    cause: str
    fix: str
    evidence: str | None = None  # the text that shows it
    retryable: bool = False  # a smaller configuration may succeed (out of memory)

    def to_dict(self) -> dict:
        return asdict(self)


# a traceback ends in `SomeError: message`; KeyboardInterrupt too
_ERROR_LINE = re.compile(r"^\s*((?:[\w.]+\.)?\w*(?:Error|Exception|Interrupt)\b.*)$", re.MULTILINE)


# The builtin trainer's refusals (a KohyagenError): "error: PATH: message (hint)".
_KOHYAGEN_ERROR = re.compile(r"^error: (.+)$", re.MULTILINE)


def kohyagen_error(text: str) -> Diagnosis | None:
    """The builtin trainer's own one-line error, split into cause and fix."""
    found = _KOHYAGEN_ERROR.findall(_ANSI.sub("", text))
    if not found:
        return None
    line = found[-1].strip()
    cause, fix = line, "fix what it names, then run again"
    # the builtin trainer prints `error: PATH: message (hint)`
    head, sep, tail = line.rpartition(" (")
    if sep and tail.endswith(")"):
        cause, fix = head, tail[:-1]
    return Diagnosis("trainer-error", cause, fix, f"error: {line}"[:300])


def _collapse(text: str) -> str:
    # Rich wraps log lines at 80 columns when piped: a message can span lines
    return re.sub(r"\s+", " ", _ANSI.sub("", text))


def _evidence(collapsed: str, match: re.Match[str]) -> str:
    start = max(0, match.start() - 40)
    end = min(len(collapsed), match.end() + 80)
    snippet = collapsed[start:end].strip()
    if len(snippet) > 240:
        snippet = snippet[:237] + "..."
    return snippet


def find_signature(text: str) -> Diagnosis | None:
    """The most specific known failure signature in the text, if any."""
    collapsed = _collapse(text)
    for sig in SIGNATURES:
        match = sig.pattern.search(collapsed)
        if match:
            cause = sig.cause
            if match.groups() and match.group(1):
                cause = f"{cause}: {match.group(1)}"
            return Diagnosis(sig.code, cause, sig.fix, _evidence(collapsed, match), sig.retryable)
    return None


def nan_loss(step: int | None) -> Diagnosis:
    where = f" at step {step}" if step else ""
    return Diagnosis(
        "nan-loss",
        f"the loss became NaN{where}: training diverged, and kohya would have kept going",
        "lower the learning rate (halve unet_lr / learning_rate), prefer bf16 over fp16, and "
        "for SDXL set no_half_vae = true; kohyagen stopped the run early",
        f"avr_loss=nan{where}",
    )


def last_error_line(text: str) -> str | None:
    """The last `SomethingError: message` line (a traceback's conclusion)."""
    matches = [m.strip() for m in _ERROR_LINE.findall(_ANSI.sub("", text))]
    # accelerate's own CalledProcessError only says that the trainer failed; the
    # trainer's error comes before it
    real = [m for m in matches if not m.startswith("subprocess.CalledProcessError")]
    chosen = real or matches
    return chosen[-1][:300] if chosen else None


def diagnose_run(
    text: str,
    exit_code: int | None,
    *,
    nan_at_step: int | None = None,
    model_saved: bool = True,
    interrupted: bool = False,
) -> Diagnosis | None:
    """Why this run (its output and exit code) failed, or None when it did not."""
    if interrupted:
        return Diagnosis(
            "interrupted",
            "the run was stopped by the user (Ctrl-C)",
            "start it again; checkpoints saved so far are kept",
        )
    if nan_at_step is not None:
        return nan_loss(nan_at_step)
    if exit_code == 0 and model_saved:
        return None  # warnings in a run that finished are not failures
    found = find_signature(text)
    # kohya exits 0 when it found no data (after `No data found`), so 0 alone proves nothing
    if exit_code == 0:
        if found is not None and found.code == "no-data":
            return found
        return Diagnosis(
            "no-model",
            "the trainer exited without saving a model",
            "read train.log in the run folder; kohya prints `model saved.` at a normal end",
            last_error_line(text),
        )
    if found is not None:
        return found
    refused = kohyagen_error(text)
    if refused is not None:
        return refused
    # -9 from Popen, 137 (128 + 9) through a shell or accelerate
    if exit_code in (-9, 137):
        return Diagnosis(
            "killed",
            "the trainer was killed (SIGKILL), usually by the kernel when system RAM ran out",
            "use a machine with more RAM, set max_data_loader_n_workers = 1, or "
            "cache_latents_to_disk = true",
            f"exit status {exit_code}",
        )
    return Diagnosis(
        "trainer-error",
        f"the trainer exited with status {exit_code}",
        "read the end of train.log in the run folder for the traceback",
        last_error_line(text),
    )
