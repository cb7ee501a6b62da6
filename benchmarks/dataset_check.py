"""Benchmark: `dataset check` (default and --deep) against a plain Pillow decode loop.

Generates a kohya train dir of 5,000 small images of mixed sizes and formats in a temp
dir, then times, in the same run and on the same (cached) files:

- baseline: one process, for each image `Image.open(path).load()`
- default:  check_dataset(...)            (headers, truncation test, content hash)
- deep:     check_dataset(..., deep=True) (every pixel decoded, process pool)
- deep with one worker, to show what the pool gains

and prints images/second and the ratios. Targets: default >= 5x the baseline; --deep
uses every core (child CPU time / wall time near the core count).

    python benchmarks/dataset_check.py [--images 5000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image

from kohyagen.dataset import check_dataset

SIZES = [(512, 512), (640, 480), (480, 640), (384, 576), (768, 512), (320, 320), (600, 800)]
# share of files per format, roughly what scraped and exported datasets hold
FORMATS = [("JPEG", ".jpg", 6), ("PNG", ".png", 3), ("WEBP", ".webp", 1)]
UNIQUE = 140  # distinct encodes; the other files are byte-level variants of them


def _base_image(rng: np.random.Generator, size: tuple[int, int], grain: float) -> Image.Image:
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b, c = rng.uniform(0.005, 0.05, 3)
    phase = rng.uniform(0, 6.28, 3)
    rgb = [np.sin(x * a + y * b * (i + 1) + phase[i]) * np.cos(y * c + phase[i]) for i in range(3)]
    arr = (np.stack(rgb, -1) * 110 + 128 + rng.normal(0, grain, (h, w, 3))).clip(0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _variant(data: bytes, fmt: str, index: int) -> bytes:
    """Same pixels, different bytes (so content hashes differ), without re-encoding."""
    tag = f"kohyagen-bench-{index}".encode()
    if fmt == "JPEG":  # a COM segment right after SOI
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(tag) + 2) + tag + data[2:]
    if fmt == "PNG":  # a tEXt chunk right before IEND
        body = b"Comment\x00" + tag
        chunk = struct.pack(">I", len(body)) + b"tEXt" + body
        chunk += struct.pack(">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF)
        end = data.rfind(b"\x00\x00\x00\x00IEND")
        return data[:end] + chunk + data[end:]
    return data  # WebP: exact copies are fine for timing (they show up as duplicates)


def generate(root: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    weights = [w for _, _, w in FORMATS]
    encoded = []
    for i in range(UNIQUE):
        fmt, ext, _ = FORMATS[rng.choice(len(FORMATS), p=np.array(weights) / sum(weights))]
        # photos (JPEG, WebP) get grain; PNGs are illustration-like flat colour, as in
        # practice, which keeps the files (and the generation) small
        im = _base_image(rng, SIZES[i % len(SIZES)], grain=0.0 if fmt == "PNG" else 2.0)
        if fmt == "PNG":
            im = Image.fromarray(np.asarray(im) // 32 * 32)
        buf = io.BytesIO()
        options = {"quality": 88} if fmt in ("JPEG", "WEBP") else {"compress_level": 6}
        im.save(buf, fmt, **options)
        encoded.append((fmt, ext, buf.getvalue()))
    subset = root / "10_bench"
    subset.mkdir(parents=True)
    paths = []
    for i in range(count):
        fmt, ext, data = encoded[i % UNIQUE]
        path = subset / f"img_{i:05d}{ext}"
        path.write_bytes(_variant(data, fmt, i))
        (subset / f"img_{i:05d}.txt").write_text(f"bench, tag{i % 17}, tag{i % 5}\n")
        paths.append(path)
    return paths


def plain_loop(paths: list[Path]) -> None:
    for p in paths:
        with Image.open(p) as im:
            im.load()


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return os.getpid()


def cpu_control(workers: int) -> tuple[float, int]:
    """Speed-up of pure-Python work in `workers` processes over one: what the machine
    actually grants right now (a shared machine may give far less than its core count)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    jobs = [2_000_000] * (2 * workers)
    start = time.perf_counter()
    for n in jobs:
        _burn(n)
    one = time.perf_counter() - start
    start = time.perf_counter()
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        pids = set(pool.map(_burn, jobs))
    return one / (time.perf_counter() - start), len(pids)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of child processes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--keep", type=Path, help="generate here and keep the files")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="kohyagen-bench-"))
    try:
        t0 = time.perf_counter()
        paths = generate(root / "train", args.images)
        gen = time.perf_counter() - t0
        total_mb = sum(p.stat().st_size for p in paths) / 1e6
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"{len(paths)} images, {total_mb:.0f} MB, generated in {gen:.1f}s; {cores} cores")
        plain_loop(paths[:200])  # warm the page cache and Pillow's plugin registry

        n = len(paths)
        base, _ = timed(lambda: plain_loop(paths))
        report = {}

        def run(**kw):
            report["r"] = check_dataset(root / "train", caption_ext=".txt", **kw)

        fast, _ = timed(lambda: run())
        fast_pool, fast_pool_cpu = timed(lambda: run(workers=cores))
        deep, deep_cpu = timed(lambda: run(deep=True))
        deep1, _ = timed(lambda: run(deep=True, workers=1))
        r = report["r"]
        assert r.image_count == n, r.image_count

        def line(name, secs, extra=""):
            print(
                f"{name:<34} {secs:7.2f}s {n / secs:9.0f} img/s  {base / secs:5.1f}x baseline{extra}"
            )

        print(
            f"{'plain Pillow open+decode loop':<34} {base:7.2f}s {n / base:9.0f} img/s   1.0x baseline"
        )
        line("check (default, in process)", fast)
        line(f"check (default, pool of {cores})", fast_pool, f"  [child CPU {fast_pool_cpu:.1f}s]")
        line(
            "check --deep",
            deep,
            f"  [child CPU {deep_cpu:.1f}s = {deep_cpu / deep:.2f} cores busy]",
        )
        line("check --deep (1 process)", deep1)
        print(f"--deep pool speed-up over 1 process: {deep1 / deep:.2f}x")
        control, pids = cpu_control(cores or 1)
        print(
            f"control: pure-Python work in {pids} processes ran {control:.2f}x faster than in one "
            f"(what this machine grants now; load average {os.getloadavg()[0]:.1f})"
        )
        target = "met" if base / fast >= 5 else "NOT met"
        print(f"target default >= 5x baseline: {target} ({base / fast:.1f}x)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
