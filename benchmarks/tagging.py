"""Tagging speed: kohyagen's tag_directory against bare onnxruntime, in one run.

A random-weight ConvNeXt (Tiny by default; --arch base for the size of SmilingWolf's
wd-convnext-tagger-v3) with the WD14 signature ([batch, 448, 448, 3] BGR float in,
sigmoid scores for 10861 tags out) is built in torch and exported to ONNX in a temp
folder, with 64+ images of mixed sizes and formats. Then:

  bare      onnxruntime.InferenceSession.run over batches that were loaded and
            preprocessed beforehand (untimed): the ceiling for any tagger.
  kohyagen  tag_directory(...) in this process: model load, decoding, preprocessing,
            inference, caption writing.
  cli       `python -m kohyagen tag DIR` in a new process, as a user runs it: process
            start and imports on top of all the above (issue 15's "end to end").

It prints images/second for each and the ratios; the goals: kohyagen >= 0.90 x bare,
the command >= 0.85 x bare (issue 15: 32 mixed 512-1024 px images, ConvNeXt-Base at
448 px: --images 32 --mixed-512-1024 --arch base). Needs torch (the [train] extra) to
build the model:

    python benchmarks/tagging.py [--images 64] [--batch-size 8] [--arch tiny|base]
        [--mixed-512-1024]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kohyagen.tagging.directory import tag_directory
from kohyagen.tagging.images import fill_slot, load_square_rgb
from kohyagen.tagging.runtime import open_runtime

N_TAGS = 10861  # the size of the v3 tag list
SIZE = 448
ARCHS = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
}
IMAGE_SIZES = [
    (512, 768),
    (768, 512),
    (1024, 1024),
    (1920, 1080),
    (1080, 1350),
    (640, 640),
    (2048, 1536),
    (300, 400),
]


def export_model(folder: Path, arch: str) -> Path:
    import torch
    from torch import nn

    depths, dims = ARCHS[arch]

    class Block(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.pw1 = nn.Linear(dim, 4 * dim)
            self.pw2 = nn.Linear(4 * dim, dim)
            self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.pw2(nn.functional.gelu(self.pw1(self.norm(y)))) * self.gamma
            return x + y.permute(0, 3, 1, 2)

    class ChannelsFirstNorm(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(dim, eps=1e-6)

        def forward(self, x):
            return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = [
                nn.Conv2d(3, dims[0], 4, stride=4),
                ChannelsFirstNorm(dims[0]),
            ]
            for stage, (depth, dim) in enumerate(zip(depths, dims, strict=True)):
                if stage:
                    layers += [
                        ChannelsFirstNorm(dims[stage - 1]),
                        nn.Conv2d(dims[stage - 1], dim, 2, stride=2),
                    ]
                layers += [Block(dim) for _ in range(depth)]
            self.features = nn.Sequential(*layers)
            self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
            self.head = nn.Linear(dims[-1], N_TAGS)

        def forward(self, pixels):  # [batch, 448, 448, 3] BGR 0..255, as the WD14 taggers
            x = pixels.permute(0, 3, 1, 2) / 127.5 - 1.0
            x = self.features(x).mean(dim=(2, 3))
            return torch.sigmoid(self.head(self.norm(x)))

    torch.manual_seed(0)
    model = Tagger().eval()
    folder.mkdir(parents=True)
    path = folder / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.rand(1, SIZE, SIZE, 3) * 255,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    names = ["general", "sensitive", "questionable", "explicit"]
    rows = ["tag_id,name,category,count"]
    rows += [f"{i},{n},9,0" for i, n in enumerate(names)]
    rows += [f"{i},tag_{i},{4 if i >= N_TAGS - 2000 else 0},0" for i in range(4, N_TAGS)]
    (folder / "selected_tags.csv").write_text("\n".join(rows) + "\n")
    return folder


def make_images(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        w, h = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        # Smooth gradients with a little noise: photo-like, so JPEG/PNG sizes are realistic.
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], axis=-1) * 255
        noise = rng.normal(0, 12, (h, w, 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        ext = ".png" if i % 4 == 3 else ".jpg"
        path = folder / f"img_{i:03d}{ext}"
        Image.fromarray(pixels).save(path, quality=92)
        paths.append(path)
    return paths


def prepare_batches(model_dir: Path, paths: list[Path], batch_size: int) -> list[np.ndarray]:
    """The bare baseline's input: every batch loaded and preprocessed up front."""
    spec = open_runtime(model_dir / "model.onnx").input
    batches = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        batch = np.empty(spec.batch_shape(len(chunk)), dtype=spec.dtype)
        for row, path in enumerate(chunk):
            fill_slot(batch, row, load_square_rgb(path, spec.size), spec.layout)
        batches.append(batch)
    return batches


def bare_inference(model_dir: Path, batches: list[np.ndarray]) -> tuple[float, float]:
    """Wall and CPU seconds of session.run over the prepared batches (after a warm-up)."""
    runtime = open_runtime(model_dir / "model.onnx")
    runtime.run(batches[0][:1])
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        runtime.run(batch)
    return time.perf_counter() - wall, time.process_time() - cpu


def cli_run(model_dir: Path, folder: Path, batch_size: int) -> tuple[float, float]:
    """Wall and CPU seconds of `kohyagen tag` in a new process (children's rusage)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "kohyagen", "tag", str(folder), "--model", str(model_dir),
         "--mode", "overwrite", "--batch-size", str(batch_size), "--json"],
        capture_output=True, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    wall = time.perf_counter() - wall
    if done.returncode != 0:
        raise SystemExit(done.stderr.decode(errors="replace"))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def kohyagen_run(model_dir: Path, folder: Path, batch_size: int, count: int):
    wall, cpu = time.perf_counter(), time.process_time()
    result = tag_directory(folder, model=model_dir, mode="overwrite", batch_size=batch_size)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert result.tagged == count, result
    return wall, cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="tiny")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternating bare/kohyagen rounds; the best of each is kept (shared machines "
        "are noisy)",
    )
    parser.add_argument(
        "--mixed-512-1024",
        action="store_true",
        help="image sides between 512 and 1024 px (issue 15's set) instead of 300-2048",
    )
    args = parser.parse_args()
    if args.mixed_512_1024:
        IMAGE_SIZES[:] = [(512, 768), (768, 512), (1024, 1024), (640, 640), (1024, 768),
                          (896, 640), (512, 512), (768, 1024)]  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="kohyagen-tag-bench-") as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        model_dir = export_model(tmp_path / "tagger", args.arch)
        paths = make_images(tmp_path / "images", args.images)
        batches = prepare_batches(model_dir, paths, args.batch_size)
        onnx_mb = (model_dir / "model.onnx").stat().st_size / 2**20
        print(
            f"setup: ConvNeXt-{args.arch} {SIZE}x{SIZE}, {N_TAGS} tags, {onnx_mb:.0f} MB ONNX; "
            f"{len(paths)} images (JPEG and PNG) of {len(IMAGE_SIZES)} sizes, sides "
            f"{min(min(s) for s in IMAGE_SIZES)}-{max(max(s) for s in IMAGE_SIZES)} px "
            f"({time.perf_counter() - t0:.1f} s, untimed)",
            flush=True,
        )
        bare, ours, loads, cli = [], [], [], []
        for round_ in range(args.rounds):
            # Alternate who goes first so that drifting load hurts both alike.
            order = ("bare", "ours", "cli") if round_ % 2 == 0 else ("cli", "ours", "bare")
            for who in order:
                if who == "bare":
                    bare.append(bare_inference(model_dir, batches))
                    wall, cpu = bare[-1]
                elif who == "cli":
                    cli.append(cli_run(model_dir, tmp_path / "images", args.batch_size))
                    wall, cpu = cli[-1]
                else:
                    wall, cpu, result = kohyagen_run(
                        model_dir, tmp_path / "images", args.batch_size, len(paths)
                    )
                    ours.append((wall, cpu))
                    loads.append(result.load_seconds)
                print(
                    f"  round {round_ + 1} {who:4}: {wall:6.1f} s wall, {cpu:6.1f} s CPU",
                    flush=True,
                )
        n = len(paths)
        bare_wall, bare_cpu = min(w for w, _ in bare), min(c for _, c in bare)
        ours_wall, ours_cpu = min(w for w, _ in ours), min(c for _, c in ours)
        print(f"provider: {result.provider}, batch size {result.batch_size}")
        print(f"bare onnxruntime (prepared batches): {n / bare_wall:7.2f} images/s")
        print(f"kohyagen tag_directory (end to end): {n / ours_wall:7.2f} images/s")
        ratio = bare_wall / ours_wall
        verdict = "within" if ratio >= 0.90 else "NOT within"
        print(
            f"ratio kohyagen/bare (wall, best of {args.rounds}): {ratio:.3f} ({verdict} the 10% goal)"
        )
        steady = min(w - load for (w, _), load in zip(ours, loads, strict=True))
        print(
            f"ratio kohyagen/bare excluding the one-time model load ({min(loads):.1f} s; the "
            f"bare run's session is built untimed): {bare_wall / steady:.3f}"
        )
        print(f"ratio kohyagen/bare (CPU time): {bare_cpu / ours_cpu:.3f}")
        cli_wall = min(w for w, _ in cli)
        verdict = "within" if bare_wall / cli_wall >= 0.85 else "NOT within"
        print(
            f"`kohyagen tag` in a new process (end to end): {n / cli_wall:7.2f} images/s; ratio "
            f"command/bare (wall, best of {args.rounds}): {bare_wall / cli_wall:.3f} "
            f"({verdict} issue 15's 0.85 goal)"
        )


if __name__ == "__main__":
    main()
