"""Running image probes over many files, in this process or in a pool of worker processes."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

# multiprocessing and concurrent.futures are imported where a pool starts: a default
# check runs in this process, and importing them was a tenth of its start-up.

from kohyagen.dataset.images import UNREADABLE, ImageProbe, probe_image

ProgressFn = Callable[[int, int], None]

# Below this many files a pool costs more (start-up, pickling) than it saves.
POOL_MIN_FILES = 64


def _probe_chunk(
    paths: list[str], deep: bool, perceptual: bool, digest: bool = True
) -> list[ImageProbe]:
    return [probe_image(p, deep=deep, perceptual=perceptual, digest=digest) for p in paths]


def _context() -> BaseContext:
    import multiprocessing

    # fork starts workers in milliseconds and they inherit the imports, but forking while
    # another thread may hold a lock can deadlock the child: then use forkserver.
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context()


def default_workers(deep: bool) -> int:
    """Deep checks decode pixels and use every core. Header checks cost well under a
    millisecond an image, less than shipping the work to another process (measured with
    benchmarks/dataset_check.py), so they stay in this process."""
    if not deep:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def probe_many(
    paths: Sequence[str],
    *,
    deep: bool = False,
    perceptual: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    digest: bool = True,
) -> list[ImageProbe]:
    """Probe every path, keeping the input order; progress(done, total) after each batch.
    digest=False leaves content hashes out (see kohyagen.dataset.digests)."""
    total = len(paths)
    if workers is None:
        workers = default_workers(deep)
    if workers <= 1 or total < POOL_MIN_FILES:
        out = []
        for i, p in enumerate(paths, 1):
            out.append(probe_image(p, deep=deep, perceptual=perceptual, digest=digest))
            if progress and (i % 32 == 0 or i == total):
                progress(i, total)
        return out
    return _probe_pooled(paths, deep, perceptual, workers, progress, digest)


def _probe_pooled(
    paths: Sequence[str],
    deep: bool,
    perceptual: bool,
    workers: int,
    progress: ProgressFn | None,
    digest: bool,
) -> list[ImageProbe]:
    """probe_many in a pool of worker processes."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    total = len(paths)
    # Small chunks keep both workers busy to the end and the progress moving; each chunk
    # is big enough that pickling costs little next to the probing.
    size = max(8, min(256, total // (workers * 16)))
    chunks = [list(paths[i : i + size]) for i in range(0, total, size)]
    results: list[list[ImageProbe] | None] = [None] * len(chunks)
    done = 0
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=_context()) as pool:
            futures = {
                pool.submit(_probe_chunk, chunk, deep, perceptual, digest): i
                for i, chunk in enumerate(chunks)
            }
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                done += len(chunks[i])
                if progress:
                    progress(done, total)
    except BrokenProcessPool:
        # A worker died (a decoder crash on a hostile file, or the OOM killer): find the
        # culprit by probing each unfinished file in a worker of its own.
        for i, chunk in enumerate(chunks):
            if results[i] is None:
                results[i] = [_isolated(p, deep, perceptual, digest) for p in chunk]
                done += len(chunk)
                if progress:
                    progress(done, total)
    return [probe for chunk in results for probe in chunk or []]


def _isolated(path: str, deep: bool, perceptual: bool, digest: bool = True) -> ImageProbe:
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=_context()) as pool:
            return pool.submit(
                probe_image, path, deep=deep, perceptual=perceptual, digest=digest
            ).result()
    except BrokenProcessPool:
        return ImageProbe(path, error=UNREADABLE, detail="the image decoder crashed on this file")
