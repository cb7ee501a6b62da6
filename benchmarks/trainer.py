"""Steps/second and peak memory of the builtin trainer on the CPU (fp32), cached vs uncached latents.

Each case runs in its own process (peak RSS is per process) on a tiny random SD1.5-shaped
pipeline, so the numbers compare the trainer's own overhead, not a real model's compute.
Usage: python benchmarks/trainer.py [--images 8] [--resolution 128] [--epochs 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_case(ns: argparse.Namespace) -> dict:
    import torch
    from PIL import Image

    from kohyagen.run.tiny import make_tiny_pipeline
    from kohyagen.trainer.config import load_config
    from kohyagen.trainer.train import run
    from tests.trainer_helpers import write_config

    torch.set_num_threads(ns.threads)
    tmp = Path(tempfile.mkdtemp(prefix="kohyagen-bench-"))
    model = make_tiny_pipeline(tmp / "model", "sd15")
    sub = tmp / "data" / "1_sks"
    sub.mkdir(parents=True)
    for i in range(ns.images):
        Image.new("RGB", (ns.resolution, ns.resolution), (30 * i % 255, 90, 160)).save(
            sub / f"{i}.png"
        )
        (sub / f"{i}.txt").write_text(f"sks, color {i}\n")
    config = write_config(
        tmp,
        model,
        data=tmp / "data",
        resolution=str(ns.resolution),
        max_train_epochs=ns.epochs,
        save_every_n_epochs=None,
        train_batch_size=ns.batch,
        cache_latents=ns.case == "cached",
        logging_dir=None,
        mixed_precision="no",
    )
    cfg = load_config(config)
    started = time.perf_counter()
    with open(os.devnull, "w") as sink:
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = sink, sink
        try:
            summary = run(cfg)
        finally:
            sys.stdout, sys.stderr = stdout, stderr
    total = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "case": ns.case,
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "steps_per_second": summary["steps"] / summary["train_seconds"],
        "total_seconds_incl_setup": total,
        "peak_rss_mib": peak_kib / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--case", choices=["cached", "uncached"], default=None)
    ns = parser.parse_args()
    if ns.case:
        print(json.dumps(run_case(ns)))
        return
    results = {}
    for case in ("uncached", "cached"):
        argv = [sys.executable, __file__, "--case", case] + [
            f"--{k}={getattr(ns, k)}"
            for k in ("images", "resolution", "epochs", "batch", "threads")
        ]
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout
        results[case] = json.loads(out.strip().splitlines()[-1])
    print(
        f"builtin trainer, tiny SD1.5-shaped model, CPU fp32, {ns.images} images at "
        f"{ns.resolution}px, batch {ns.batch}, {ns.epochs} epochs, {ns.threads} thread(s)"
    )
    for case, r in results.items():
        print(
            f"  {case:9s} {r['steps_per_second']:6.2f} steps/s  "
            f"({r['steps']} steps in {r['train_seconds']:.1f}s, {r['total_seconds_incl_setup']:.1f}s"
            f" with setup)  peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
    speedup = results["cached"]["steps_per_second"] / results["uncached"]["steps_per_second"]
    print(f"  cached / uncached steps/s: {speedup:.2f}x")


if __name__ == "__main__":
    main()
