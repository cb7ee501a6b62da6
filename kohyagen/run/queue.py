"""Train several LoRAs in one session: one after another, or one per free GPU.

Each item (a run folder made by `kohyagen run`, or a training config) runs in its own
child process (`kohyagen queue-item`), so that a crash, an OOM or a bad config in one
item cannot stop the others, and so that each worker can be given its own GPU through
CUDA_VISIBLE_DEVICES. Each item's output goes to queue.log in its run folder and,
line by line, to the progress callback. What an item is and what its worker process
does with it is run.queue_item's.
"""

from __future__ import annotations

import json
import os
import queue as stdlib_queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from kohyagen.errors import UsageError
from kohyagen.run.queue_item import Progress, QueueItem, classify

OK, FAILED = "ok", "failed"


@dataclass(frozen=True)
class ItemResult:
    item: str
    kind: str | None
    status: str  # "ok" or "failed"
    exit_code: int | None
    run_dir: str | None
    lora: str | None
    message: str
    seconds: float
    gpu: str | None  # the CUDA_VISIBLE_DEVICES it ran with, None when not set

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QueueResult:
    results: tuple[ItemResult, ...]
    gpus: tuple[str, ...]  # the GPUs that ran workers ("" = one worker, GPU not pinned)

    @property
    def failed(self) -> tuple[ItemResult, ...]:
        return tuple(r for r in self.results if r.status != OK)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpus": list(self.gpus),
            "results": [r.to_dict() for r in self.results],
            "failed": len(self.failed),
        }


def worker_gpus(gpus: Sequence[str] | None, *, sequential: bool) -> list[str | None]:
    """One entry per worker: the CUDA_VISIBLE_DEVICES value it gets (None: untouched).

    gpus None asks the hardware: several free GPUs mean one worker each."""
    if sequential:
        # one worker: items run one after another
        return [gpus[0] if gpus else None]
    if gpus:
        # dict.fromkeys drops repeats and keeps the order given
        return list(dict.fromkeys(str(g) for g in gpus))
    from kohyagen.estimate.hardware import detect

    free = detect().free_gpus()
    # a single GPU needs no pinning; CUDA_VISIBLE_DEVICES stays as the user set it
    if len(free) > 1:
        return [str(g.index) for g in free]
    return [None]


def _error_line(log_text: str) -> str:
    for line in reversed(log_text.splitlines()):
        # the CLI's one-line error (kohyagen.cli) is the best summary of a failure
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()
    tail = [line for line in log_text.splitlines() if line.strip()]
    return tail[-1].strip() if tail else "no output"


def _run_one(
    item: QueueItem,
    *,
    gpu: str | None,
    extra_args: Sequence[str],
    progress: Progress,
    python: str,
) -> ItemResult:
    item.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = item.run_dir / "queue.log"
    # the worker reports its result in a file: its stdout is the training's own output
    fd, result_file = tempfile.mkstemp(prefix="kohyagen-queue-", suffix=".json")
    os.close(fd)
    env = dict(os.environ)
    if gpu is not None:
        # the worker and its trainer see only this GPU, as device 0: nothing else to configure
        env["CUDA_VISIBLE_DEVICES"] = gpu
    cmd = [python, "-m", "kohyagen", "queue-item", str(item.path), "--result", result_file]
    cmd += list(extra_args)
    started = time.monotonic()
    try:
        with log_path.open("a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(cmd)}\n")
            code, lines = _stream(cmd, env, log, lambda line: progress(item.label, line))
        seconds = time.monotonic() - started
        data = _read_result(Path(result_file))
    finally:
        Path(result_file).unlink(missing_ok=True)
    if code == 0:
        lora = data.get("lora")
        message = f"LoRA: {lora}" if lora else "done"
        return ItemResult(
            str(item.path), item.kind, OK, 0, str(item.run_dir), lora, message, seconds, gpu
        )
    message = f"{_error_line(''.join(lines))} (log: {log_path})"
    return ItemResult(
        str(item.path), item.kind, FAILED, code, str(item.run_dir), None, message, seconds, gpu
    )


def _stream(
    cmd: list[str], env: dict[str, str], log: IO[str], on_line: Callable[[str], None]
) -> tuple[int, list[str]]:
    """Run cmd, copying its output into log and each line to on_line; its exit code and
    its last 200 lines."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        log.write(line)
        log.flush()
        lines.append(line)
        del lines[:-200]
        on_line(line.rstrip("\n"))
    return proc.wait(), lines


def _read_result(result_file: Path) -> dict[str, Any]:
    """The worker's result JSON; empty when it wrote none (it failed before the end)."""
    try:
        text = result_file.read_text(encoding="utf-8")
        return json.loads(text) if text.strip() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _extra_args(backend: str | None, sd_scripts: str | Path | None) -> list[str]:
    """The options every item's `kohyagen run` / `train` gets from the queue's own."""
    extra: list[str] = []
    if backend:
        extra += ["--backend", backend]
    if sd_scripts:
        extra += ["--sd-scripts", str(sd_scripts)]
    return extra


def run_queue(
    items: Sequence[str | Path],
    *,
    gpus: Sequence[str] | None = None,
    sequential: bool = False,
    backend: str | None = None,
    sd_scripts: str | Path | None = None,
    progress: Progress | None = None,
    python: str | None = None,
) -> QueueResult:
    """Run every item; a failed one is recorded and the others go on."""
    if not items:
        raise UsageError("nothing to queue", hint="pass run folders or training configs")
    progress = progress or (lambda label, line: None)
    extra = _extra_args(backend, sd_scripts)
    results: dict[int, ItemResult] = {}
    todo: stdlib_queue.Queue[tuple[int, QueueItem]] = stdlib_queue.Queue()
    for n, raw in enumerate(items):
        try:
            todo.put((n, classify(raw)))
        except UsageError as exc:
            # a bad item is a failed result, not an abort: the others still run
            results[n] = ItemResult(str(raw), None, FAILED, 1, None, None, str(exc), 0.0, None)
    workers = worker_gpus(gpus, sequential=sequential)
    lock = threading.Lock()

    def work(gpu: str | None) -> None:
        while True:
            try:
                # workers take the next item as they finish: a slow item does not hold a GPU idle
                n, item = todo.get_nowait()
            except stdlib_queue.Empty:
                return
            try:
                result = _run_one(
                    item,
                    gpu=gpu,
                    extra_args=extra,
                    progress=progress,
                    python=python or sys.executable,
                )
            except OSError as exc:
                result = ItemResult(
                    str(item.path), item.kind, FAILED, None, str(item.run_dir), None,
                    f"could not start: {exc}", 0.0, gpu,
                )  # fmt: skip
            with lock:
                results[n] = result

    threads = [threading.Thread(target=work, args=(g,), daemon=True) for g in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # results in the order the items were given, whichever finished first
    ordered = tuple(results[n] for n in sorted(results))
    return QueueResult(ordered, tuple(g or "" for g in workers))
