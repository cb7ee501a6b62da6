"""The tagging loop: images loaded by a thread pool, inferred in batches, captioned.

Kept apart from tagging.py (arguments, file discovery, the result) so that the
pipeline's one concern, keeping the model busy, reads on its own.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kohyagen.errors import TaggingError
from kohyagen.tagging.captions import (
    CaptionOptions,
    TagSelector,
    caption_text,
    merge_tags,
    read_caption,
    split_tags,
    write_atomic,
)
from kohyagen.tagging.images import prepare_into
from kohyagen.tagging.runtime import Runtime

ProgressCallback = Callable[[int, int], None]
# Batches prepared ahead of the one running on an accelerator: enough to hide a slow
# decode, few enough to bound memory (a 32 x 448 x 448 x 3 float batch is 77 MB).
PREFETCH_BATCHES = 2
# On the CPU provider onnxruntime already uses every core, so loading alongside it
# only preempts its threads, and each preemption stalls the others at the next
# barrier: measured ~20% slower than loading each batch (on all cores) between runs.
CPU_PREFETCH_BATCHES = 0


@dataclass(frozen=True)
class ImageFailure:
    path: Path
    reason: str


def caption_path(image: Path, extension: str) -> Path:
    return image.with_suffix(extension)


class BatchRun:
    """One pass over the images: a thread-pool loader feeding batched inference."""

    def __init__(
        self,
        runtime: Runtime,
        selector: TagSelector,
        options: CaptionOptions,
        mode: str,
        caption_ext: str,
        rows: int,
        progress: ProgressCallback | None,
    ) -> None:
        self.runtime = runtime
        self.selector = selector
        self.options = options
        self.mode = mode
        self.caption_ext = caption_ext
        self.rows = rows
        self.progress = progress
        self.tagged = 0
        self.failures: list[ImageFailure] = []
        self.counts: Counter[str] = Counter()

    def tag(self, todo: list[Path], workers: int) -> None:
        batches = [todo[i : i + self.rows] for i in range(0, len(todo), self.rows)]
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kohyagen-tag")
        pending: deque[tuple[list[Path], np.ndarray, list[Future]]] = deque()
        ahead = CPU_PREFETCH_BATCHES if self.runtime.provider == "CPU" else PREFETCH_BATCHES
        submitted = 0
        done = 0
        try:
            for _ in batches:
                while submitted < len(batches) and len(pending) <= ahead:
                    pending.append(self._submit(pool, batches[submitted]))
                    submitted += 1
                paths, batch, futures = pending.popleft()
                self._finish(paths, batch, [f.result() for f in futures])
                done += len(paths)
                if self.progress is not None:
                    self.progress(done, len(todo))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _submit(
        self, pool: ThreadPoolExecutor, paths: list[Path]
    ) -> tuple[list[Path], np.ndarray, list[Future[Any]]]:
        spec = self.runtime.input
        fixed = spec.fixed_batch
        batch = np.empty(spec.batch_shape(fixed or len(paths)), dtype=spec.dtype)
        if fixed and fixed > len(paths):
            batch[len(paths) :] = 255.0
        futures = [
            pool.submit(prepare_into, batch, row, p, spec.size, spec.layout)
            for row, p in enumerate(paths)
        ]
        return paths, batch, futures

    def _finish(self, paths: list[Path], batch: np.ndarray, errors: list[str | None]) -> None:
        ok = [i for i, err in enumerate(errors) if err is None]
        for path, err in zip(paths, errors, strict=True):
            if err is not None:
                self.failures.append(ImageFailure(path, f"cannot read image: {err}"))
        if not ok:
            return
        compacted = False
        if len(ok) < len(paths):
            if self.runtime.input.fixed_batch:
                batch[[i for i, e in enumerate(errors) if e is not None]] = 255.0
            else:
                batch, compacted = batch[ok], True
        try:
            probs = self.runtime.run(batch)
        except Exception as exc:  # onnxruntime's errors are untyped
            raise TaggingError(
                f"inference failed on a batch of {len(batch)}: {str(exc).splitlines()[0]}",
                hint="a smaller --batch-size may fit in memory",
            ) from exc
        if probs.ndim != 2 or probs.shape[1] != len(self.selector.display):
            raise TaggingError(
                f"the model gives scores of shape {list(probs.shape)} but its tag list has "
                f"{len(self.selector.display)} rows",
                hint="model.onnx and selected_tags.csv must come from the same tagger",
            )
        for k, row in enumerate(ok):
            self._write(paths[row], self.selector.select(probs[k if compacted else row]))

    def _write(self, image: Path, tags: list[str]) -> None:
        target = caption_path(image, self.caption_ext)
        try:
            if self.mode == "append":
                existing = read_caption(target)
                if existing is not None:
                    tags = merge_tags(split_tags(existing), tags, self.options.trigger)
            write_atomic(target, caption_text(tags))
        except UnicodeDecodeError:
            reason = f"{target.name} is not UTF-8 text, so it was left as it is"
            self.failures.append(ImageFailure(image, reason))
            return
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self.failures.append(ImageFailure(image, f"cannot write {target.name}: {reason}"))
            return
        self.tagged += 1
        trigger = self.options.trigger
        self.counts.update(t for t in tags if t != trigger)
