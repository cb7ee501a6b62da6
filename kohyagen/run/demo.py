"""`kohyagen demo`: the whole `run` pipeline on a tiny random model, offline, on the CPU.

It draws a small dataset of coloured shapes with matching captions, writes a tiny random
SD1.5-shaped model (kohyagen.run.tiny) and a tiny random tagger (kohyagen.run.tiny_tagger),
and runs check → prepare → tag → config → estimate → train (builtin backend) → report →
pick on them, then draws a small preview (every checkpoint at two LoRA weights, two seeds,
few steps) and writes report.html, so that a newcomer sees every stage work before renting
a GPU. The LoRA it makes is of course useless for real images.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from kohyagen.report.preview import PreviewOptions
from kohyagen.run.pipeline import Progress, RunOptions, run_pipeline
from kohyagen.run.result import RunResult

if TYPE_CHECKING:
    from PIL import Image

TRIGGER = "kgdemo"
NAME = "demo"
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 40),
}
SHAPES = ("circle", "square", "triangle")
IMAGE_SIZE = 96
# kohya options that make a tiny model train in seconds on a CPU (see kohyagen.run.tiny).
DEMO_OVERRIDES = (
    "resolution=64",
    "dataset.min_bucket_reso=64",
    "dataset.max_bucket_reso=128",
    "network_dim=4",
    "network_alpha=2.0",
    "learning_rate=5e-3",
    "unet_lr=5e-3",
    "text_encoder_lr=2.5e-3",
    "optimizer_type=AdamW",
    "max_data_loader_n_workers=0",
    "persistent_data_loader_workers=false",
    "save_every_n_epochs=1",
)
DEMO_EPOCHS = 3
# Small enough to draw in seconds on a CPU, big enough to show rows x columns x seeds.
DEMO_PREVIEW = PreviewOptions(checkpoints="all", weights=(0.5, 1.0), seeds=2, steps=4)
# images left without a caption, so that the tag stage runs (on a tiny random tagger)
DEMO_UNCAPTIONED = 2


def _draw(shape: str, color: tuple[int, int, int], size: int, rng: random.Random) -> Image.Image:
    from PIL import Image, ImageDraw

    background = tuple(rng.randint(225, 255) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    margin = rng.randint(size // 8, size // 4)
    box = (margin, margin, size - margin, size - margin)
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon(
            [(size // 2, margin), (size - margin, size - margin), (margin, size - margin)],
            fill=color,
        )
    return image


def _combos(count: int, rng: random.Random) -> list[tuple[str, str]]:
    """The (colour, shape) of each demo image; the shuffle is the rng's first use."""
    combos = [(c, s) for s in SHAPES for c in COLORS]
    rng.shuffle(combos)
    return [combos[i % len(combos)] for i in range(count)]


def _refuse_foreign(directory: Path, count: int = 8, seed: int = 0) -> None:
    """UsageError when directory holds files an earlier demo did not make: demo would
    mix its images with a user's images/ and train on both, or stop at a run/ that is
    not a run after writing its models. Checked before anything is written."""
    from kohyagen.errors import UsageError
    from kohyagen.run.manifest import MANIFEST_NAME

    ours = {f"{i:02d}_{c}_{s}{ext}" for i, (c, s) in enumerate(_combos(count, random.Random(seed)))
            for ext in (".png", ".txt")}  # fmt: skip
    images, run = directory / "images", directory / "run"
    # dot names: temp files a killed tag stage left, which the next one removes
    listed = [p.name for p in images.iterdir()] if images.is_dir() else []
    foreign = sorted(n for n in listed if n not in ours and not n.startswith("."))
    if not foreign and run.is_dir() and any(run.iterdir()) and not (run / MANIFEST_NAME).exists():
        foreign = ["run/"]
    if foreign or images.is_file() or run.is_file():
        raise UsageError(
            f"this folder holds files the demo did not make ({(foreign or ['images or run'])[0]})",
            path=directory,
            hint="pass another --dir: an empty folder, or one an earlier demo made",
        )


def make_demo_dataset(
    folder: str | Path,
    *,
    count: int = 8,
    trigger: str = TRIGGER,
    seed: int = 0,
    uncaptioned: int = 0,
) -> list[Path]:
    """`count` images of coloured shapes, each with a caption naming the trigger, colour and
    shape (`kgdemo, red circle, simple background`), except the last `uncaptioned` ones,
    which the tag stage captions. Existing files are left alone."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    made = []
    for i, (color, shape) in enumerate(_combos(count, rng)):
        image_path = folder / f"{i:02d}_{color}_{shape}.png"
        if not image_path.exists():
            _draw(shape, COLORS[color], IMAGE_SIZE, rng).save(image_path)
            if i < count - uncaptioned:
                caption = f"{trigger}, {color} {shape}, simple background\n"
                image_path.with_suffix(".txt").write_text(caption, encoding="utf-8")
        made.append(image_path)
    return made


def prepare_demo(directory: str | Path, *, epochs: int = DEMO_EPOCHS) -> RunOptions:
    """Write the demo model and dataset under directory (once) and return the run options."""
    from kohyagen.run.tiny import make_tiny_pipeline
    from kohyagen.run.tiny_tagger import make_tiny_tagger

    directory = Path(directory).resolve()
    _refuse_foreign(directory)
    model_dir = directory / "tiny-sd15"
    if not (model_dir / "model_index.json").is_file():
        model_dir = make_tiny_pipeline(model_dir, kind="sd15", seed=0)
    tagger = make_tiny_tagger(directory / "tiny-tagger")
    images = directory / "images"
    make_demo_dataset(images, uncaptioned=DEMO_UNCAPTIONED)
    return RunOptions(
        images=images,
        name=NAME,
        trigger=TRIGGER,
        model="sd15",
        base_model=str(model_dir),
        gpu="cpu",
        backend="builtin",
        run_dir=directory / "run",
        epochs=epochs,
        overrides=DEMO_OVERRIDES,
        seed=0,
        tagger=str(tagger),
    )


def run_demo(
    directory: str | Path, *, progress: Progress | None = None, epochs: int = DEMO_EPOCHS
) -> RunResult:
    """Make (or reuse) the demo inputs in directory and run the pipeline on them."""
    options = prepare_demo(directory, epochs=epochs)
    result = run_pipeline(options, progress=progress)
    if result.lora is not None:
        preview_demo(result.run_dir, progress)
    return result


def preview_demo(run_dir: Path, progress: Progress | None) -> None:
    """Draw the demo's preview grids and rewrite report.html to show them."""
    from kohyagen.report.preview import render_preview
    from kohyagen.report.summary import write_report

    say = progress or (lambda _stage, _message: None)
    say("preview", "started")
    result = render_preview(run_dir, DEMO_PREVIEW)
    write_report(run_dir)
    say("preview", f"done: {result.total} images ({result.drawn} drawn), "
                   f"{len(result.grids)} grids in {result.folder}")  # fmt: skip
