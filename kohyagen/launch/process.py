"""Run the trainer as a child process: tee its raw output, watch it, stop it cleanly.

The child gets its own process group (session), so a terminal Ctrl-C reaches kohyagen
only; kohyagen then asks the whole group to stop (SIGINT, as a Ctrl-C would), waits,
then escalates to SIGTERM and SIGKILL. accelerate and the training script sit in that
group, so nothing is left running on the GPU.

stdout and stderr share one pipe so the log keeps their real interleaving; the child
runs unbuffered (PYTHONUNBUFFERED) so stdout lines are not held back behind the bar.
"""

from __future__ import annotations

import codecs
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Seconds to wait after SIGINT before SIGTERM, and after SIGTERM before SIGKILL.
# SIGINT lets Python unwind as after a Ctrl-C: accelerate stops its workers, files close
INTERRUPT_GRACE_S = 15.0
TERMINATE_GRACE_S = 5.0


@dataclass(frozen=True)
class ProcessOutcome:
    exit_code: int | None
    stop_reason: str | None  # why kohyagen stopped it ("interrupted", "nan-loss", ...)
    log_start: int  # byte offsets of this process's output in the log
    log_end: int
    started_at: float
    ended_at: float


class _Stopper:
    """The SIGINT -> SIGTERM -> SIGKILL sequence, advanced by the watching loop."""

    def __init__(self, proc: subprocess.Popen, interrupt_grace: float, terminate_grace: float):
        self.proc = proc
        self.interrupt_grace = interrupt_grace
        self.terminate_grace = terminate_grace
        self.stage = 0
        self.since = 0.0

    def _signal(self, sig: int) -> None:
        if self.proc.poll() is not None:
            return
        try:
            if os.name == "posix":
                # the whole group: accelerate's launcher and the training script under it
                os.killpg(self.proc.pid, sig)
            elif sig == signal.SIGINT:  # pragma: no cover - Windows
                # Windows-only name: mypy checks for the platform it runs on
                self.proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined,unused-ignore]
            else:  # pragma: no cover - Windows
                self.proc.kill()
        # already gone between poll() and the signal
        except (ProcessLookupError, PermissionError):
            pass

    def request(self, *, hard: bool = False) -> None:
        if hard:
            self.stage = 3
            self._signal(signal.SIGKILL if os.name == "posix" else signal.SIGTERM)
            return
        if self.stage == 0:
            self.stage, self.since = 1, time.monotonic()
            self._signal(signal.SIGINT)

    def tick(self) -> None:
        if self.stage == 1 and time.monotonic() - self.since > self.interrupt_grace:
            self.stage, self.since = 2, time.monotonic()
            self._signal(signal.SIGTERM)
        elif self.stage == 2 and time.monotonic() - self.since > self.terminate_grace:
            self.request(hard=True)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # kohya's stdout lines (`epoch 1/2`, `saving checkpoint`) would otherwise wait in a
    # block buffer while the stderr bar runs ahead
    env["PYTHONUNBUFFERED"] = "1"
    # kohya prints Japanese in its plan lines
    env.setdefault("PYTHONIOENCODING", "utf-8")
    # Rich wraps kohya's log lines at 80 columns on a pipe; wider keeps messages whole.
    env["COLUMNS"] = "200"
    if extra:
        env.update(extra)
    return env


def _start(argv: Sequence[str], *, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """The child in its own process group (session), so a stop reaches all its processes."""
    popen_kwargs: dict = {}
    if os.name == "posix":
        popen_kwargs["start_new_session"] = True
    else:  # pragma: no cover - Windows
        # Windows-only name: mypy checks for the platform it runs on
        popen_kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined,unused-ignore]
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **popen_kwargs,
    )


def _pump(proc: subprocess.Popen, chunks: queue.Queue[bytes | None]) -> None:
    """Move the child's output into the queue as it comes; None marks its end."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while True:
        data = os.read(fd, 65536)
        if not data:
            break
        chunks.put(data)
    chunks.put(None)


def run_streaming(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    on_text: Callable[[str], str | None],
    interrupt_grace: float = INTERRUPT_GRACE_S,
    terminate_grace: float = TERMINATE_GRACE_S,
    on_start: Callable[[int], None] | None = None,
) -> ProcessOutcome:
    """Run argv, appending its raw output to log_path and passing decoded text to on_text.

    on_text returns a reason to stop the run (e.g. "nan-loss") or None. A Ctrl-C
    (KeyboardInterrupt) while waiting stops the child with reason "interrupted"; a second
    Ctrl-C kills it at once. Returns when the child has exited and its output is drained.
    on_start(pid) is called once the child runs: on POSIX, pid is its process group too.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log_start = log.tell()
        started = time.time()
        proc = _start(argv, cwd=cwd, env=env)
        chunks: queue.Queue[bytes | None] = queue.Queue()
        reader = threading.Thread(
            target=_pump, args=(proc, chunks), name="kohyagen-trainer-output", daemon=True
        )
        reader.start()
        # incremental: a multi-byte character (tqdm's █) may be split between two reads
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stopper = _Stopper(proc, interrupt_grace, terminate_grace)
        stop_reason: str | None = None
        try:
            if on_start is not None:
                on_start(proc.pid)
            stop_reason = _watch(proc, chunks, log, decoder, stopper, on_text)
        except BaseException:
            # a failing callback must not leave a trainer running on the GPU
            stopper.request(hard=True)
            proc.wait()
            raise
        reader.join(timeout=1)
        if proc.stdout is not None:
            proc.stdout.close()
        log_end = log.tell()
    return ProcessOutcome(proc.returncode, stop_reason, log_start, log_end, started, time.time())


def _watch(
    proc: subprocess.Popen,
    chunks: queue.Queue[bytes | None],
    log: BinaryIO,
    decoder: codecs.IncrementalDecoder,
    stopper: _Stopper,
    on_text: Callable[[str], str | None],
) -> str | None:
    """Pass output on until it ends, stopping the child when asked; return why it stopped."""
    stop_reason: str | None = None
    drained = False
    while not drained:
        try:
            try:
                data = chunks.get(timeout=0.1)
            except queue.Empty:
                stopper.tick()
                continue
            if data is None:
                drained = True
                text = decoder.decode(b"", final=True)
            else:
                # the raw bytes, \r and escapes included: the log is what kohya printed
                log.write(data)
                log.flush()
                text = decoder.decode(data)
            if text:
                reason = on_text(text)
                if reason and stop_reason is None:
                    stop_reason = reason
                    stopper.request()
            stopper.tick()
        except KeyboardInterrupt:
            # a second Ctrl-C means now
            if stop_reason == "interrupted":
                stopper.request(hard=True)
            else:
                stop_reason = "interrupted"
                stopper.request()
    # Output is closed; the process exits right after (or is being stopped).
    while True:
        try:
            proc.wait(timeout=0.2)
            return stop_reason
        except subprocess.TimeoutExpired:
            stopper.tick()
        except KeyboardInterrupt:
            stop_reason = stop_reason or "interrupted"
            stopper.request(hard=True)


def default_python() -> str:
    return sys.executable
