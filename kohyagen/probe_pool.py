"""Running image probes over many files, in this process or in a pool of worker processes."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from kohyagen.images import ImageProbe, probe_image

ProgressFn = Callable[[int, int], None]

# Below this many files a pool costs more (start-up, pickling) than it saves.
POOL_MIN_FILES = 64


def _probe_chunk(paths: list[str], deep: bool, perceptual: bool) -> list[ImageProbe]:
    return [probe_image(p, deep=deep, perceptual=perceptual) for p in paths]


def _context():
    # fork starts workers in milliseconds and they inherit the imports; the CLI makes sure
    # no other threads run while the pool starts. Elsewhere use the platform default.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def default_workers(deep: bool) -> int:
    """Deep checks decode pixels and use every core; header checks are I/O-light and
    gain little from more processes than two."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    return cores if deep else min(cores, 2)


def probe_many(
    paths: Sequence[str],
    *,
    deep: bool = False,
    perceptual: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> list[ImageProbe]:
    """Probe every path, keeping the input order; progress(done, total) after each batch."""
    total = len(paths)
    if workers is None:
        workers = default_workers(deep)
    if workers <= 1 or total < POOL_MIN_FILES:
        out = []
        for i, p in enumerate(paths, 1):
            out.append(probe_image(p, deep=deep, perceptual=perceptual))
            if progress and (i % 32 == 0 or i == total):
                progress(i, total)
        return out
    # Small chunks keep both workers busy to the end and the progress moving; each chunk
    # is big enough that pickling costs little next to the probing.
    size = max(8, min(256, total // (workers * 16)))
    chunks = [list(paths[i : i + size]) for i in range(0, total, size)]
    results: list[list[ImageProbe] | None] = [None] * len(chunks)
    done = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=_context()) as pool:
        futures = {
            pool.submit(_probe_chunk, chunk, deep, perceptual): i for i, chunk in enumerate(chunks)
        }
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            done += len(chunks[i])
            if progress:
                progress(done, total)
    return [probe for chunk in results for probe in chunk or []]
