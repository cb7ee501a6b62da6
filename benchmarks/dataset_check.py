"""Benchmark: `dataset check` (default and --deep) against a plain Pillow decode loop.

Generates a kohya train dir of 5,000 small images of mixed sizes and formats in a temp
dir, then times, in the same run and on the same (cached) files:

- baseline: one process, for each image `Image.open(path).load()`
- default:  check_dataset(...)            (headers, truncation test, content hash)
- deep:     check_dataset(..., deep=True) (every pixel decoded, process pool)
- deep with one worker, to show what the pool gains
- end to end: `python -m kohyagen dataset check DIR --json` as a user runs it (process
  start, imports, the check, the JSON), the number issue 15 asks about; the median of
  three runs

and prints images/second and the ratios. Targets: default >= 5x the baseline (issue 15:
15x end to end on 3,000 768-px JPEGs: --images 3000 --side 768 --jpeg); --deep uses
every core (child CPU time / wall time near the core count).

    python benchmarks/dataset_check.py [--images 5000] [--side 768] [--jpeg] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image

from kohyagen.dataset.check import check_dataset

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
    """Same pixels, different bytes (so content hashes differ), without re-encoding.

    The padding gives each variant its own size, as different photos have: the check
    hashes only files whose size another shares (kohyagen.dataset.digests), and equal
    sizes for most files would measure a dataset no camera makes."""
    tag = f"kohyagen-bench-{index}-".encode() + b"." * (index % 997)
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
    """(wall seconds, CPU seconds of this process and its finished children)."""
    before_self = resource.getrusage(resource.RUSAGE_SELF)
    before_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    after_self = resource.getrusage(resource.RUSAGE_SELF)
    after_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(
        (getattr(a, f) - getattr(b, f))
        for a, b in ((after_self, before_self), (after_kids, before_kids))
        for f in ("ru_utime", "ru_stime")
    )
    return wall, cpu


def end_to_end(folder: Path) -> None:
    """`kohyagen dataset check` in a new process, exactly as typed in a shell.

    With bytecode caching on, as an installed kohyagen has it: a sandbox that sets
    PYTHONDONTWRITEBYTECODE would otherwise compile every module on each run (a sixth
    of the run on 3,000 images), which no user's machine does."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(
        [sys.executable, "-m", "kohyagen", "dataset", "check", str(folder), "--json",
         "--caption-ext", ".txt"],
        capture_output=True, cwd=Path(__file__).resolve().parent.parent, env=env,
    )  # fmt: skip
    if done.returncode not in (0, 1):  # 1: the check found errors, a result all the same
        raise SystemExit(done.stderr.decode(errors="replace"))


def main() -> int:
    global SIZES, FORMATS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--side", type=int, help="every image side x side (e.g. 768)")
    parser.add_argument("--jpeg", action="store_true", help="JPEGs only")
    parser.add_argument("--keep", type=Path, help="generate here and keep the files")
    parser.add_argument("--no-deep", action="store_true", help="skip the two --deep runs")
    args = parser.parse_args()
    if args.side:
        SIZES = [(args.side, args.side)]
    if args.jpeg:
        FORMATS = [("JPEG", ".jpg", 1)]
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
        base, base_cpu = timed(lambda: plain_loop(paths))
        report = {}

        def run(**kw):
            report["r"] = check_dataset(root / "train", caption_ext=".txt", **kw)

        runs = [
            ("check (default, in process)", timed(lambda: run())),
            (f"check (default, pool of {cores})", timed(lambda: run(workers=cores))),
        ]
        if not args.no_deep:
            runs += [
                (f"check --deep (pool of {cores})", timed(lambda: run(deep=True))),
                ("check --deep (1 process)", timed(lambda: run(deep=True, workers=1))),
            ]
        # three new processes, the median one counted: one run of a third of a second
        # swings by a tenth with whatever else the machine does
        end_to_end(root / "train")  # untimed: writes the bytecode cache an install has
        e2e = sorted(timed(lambda: end_to_end(root / "train")) for _ in range(3))
        runs.append(("kohyagen dataset check (new process)", e2e[1]))
        assert report["r"].image_count == n, report["r"].image_count

        # Wall time is what the user waits for; CPU time is what the work costs, and is the
        # fairer ratio on a machine shared with other jobs.
        print(f"{'':36}{'wall':>8}{'img/s':>9}{'vs loop':>9}{'CPU':>9}{'CPU vs loop':>13}")

        def line(name, wall, cpu):
            print(
                f"{name:<36}{wall:7.2f}s{n / wall:9.0f}{base / wall:8.1f}x"
                f"{cpu:8.2f}s{base_cpu / cpu:12.1f}x"
            )

        line("plain Pillow open+decode loop", base, base_cpu)
        for name, (wall, cpu) in runs:
            line(name, wall, cpu)
        if not args.no_deep:
            deep_wall, deep_cpu = runs[2][1]
            deep1_wall, _ = runs[3][1]
            print(
                f"--deep pool: {deep_cpu / deep_wall:.2f} cores busy on average; "
                f"{deep1_wall / deep_wall:.2f}x faster than one process"
            )
        control, pids = cpu_control(cores or 1)
        print(
            f"control: pure-Python work in {pids} processes ran {control:.2f}x faster than in one "
            f"(what this machine grants now; load average {os.getloadavg()[0]:.1f})"
        )
        fast_wall = runs[0][1][0]
        target = "met" if base / fast_wall >= 5 else "NOT met"
        print(f"target default >= 5x the loop: {target} ({base / fast_wall:.1f}x wall)")
        e2e_wall, e2e_cpu = runs[-1][1]
        print(
            f"end to end (process start included): {base / e2e_wall:.1f}x the loop (wall), "
            f"{base_cpu / e2e_cpu:.1f}x (CPU); issue 15 goal: 15x with --images 3000 --side 768 "
            "--jpeg"
        )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
