"""A finished run with prompts, samples and a dataset, and a fast fake preview renderer."""

from __future__ import annotations

import json
from pathlib import Path

from train_fixtures import make_run

from tests.conftest import make_image

TRIGGER = "sks"
PROMPTS = (
    "sks --n blurry --w 64 --h 64 --l 5 --s 3 --d 7\n"
    "sks, red circle, simple background, outdoors --n blurry --w 64 --h 48 --l 5 --s 3 --d 20\n"
)


def make_preview_run(
    root: Path, *, model: Path | None = None, script: str = "train_network", name: str = "mylora"
) -> Path:
    """make_run's three-epoch run, plus what preview and report.html read: the base model,
    sample_prompts.txt, sample images of each epoch and a dataset_config.toml whose folder
    holds captioned images of two aspect ratios."""
    run = make_run(root, [0.5, 0.4, 0.3], name=name)
    prompts = run / "sample_prompts.txt"
    prompts.write_text(PROMPTS, encoding="utf-8")
    data = root / "data" / "2_sks"
    for i, size in enumerate([(64, 64), (64, 64), (96, 64)]):
        make_image(data / f"img{i}.png", size=size, color=(40 * i, 120, 200))
        (data / f"img{i}.txt").write_text(f"sks, red circle, tag{i}\n", encoding="utf-8")
    dataset = run / "dataset_config.toml"
    dataset.write_text(
        '[general]\nresolution = 64\nenable_bucket = true\nmin_bucket_reso = 64\n'
        'max_bucket_reso = 128\nbucket_no_upscale = true\ncaption_extension = ".txt"\n\n'
        f'[[datasets]]\n[[datasets.subsets]]\nimage_dir = "{data}"\nnum_repeats = 2\n',
        encoding="utf-8",
    )
    config = run / "training_config.toml"
    config.write_text(
        f"# kohyagen-script: {script}.py\n" + config.read_text()
        + f'pretrained_model_name_or_path = "{model or root / "no-model"}"\n'
        f'sample_prompts = "{prompts}"\nsample_sampler = "euler_a"\n'
        f'dataset_config = "{dataset}"\nnetwork_dim = 4\n',
        encoding="utf-8",
    )  # fmt: skip
    # `kohyagen run` records the trigger here; preview builds its variations with it
    (run / "kohyagen.json").write_text(json.dumps({"inputs": {"trigger": TRIGGER}}))
    sample = root / "out" / "output" / "sample"
    for epoch in (1, 2, 3):
        for index in (0, 1):
            make_image(sample / f"{name}_e{epoch:06d}_{index:02d}_20261129110000_{7 + index}.png",
                       color=(60 * epoch, 30 * index, 90))  # fmt: skip
    return run


def fake_color(lora: Path | None, weight: float, seed: int) -> tuple[int, int, int]:
    """A colour that names the checkpoint, weight and seed an image was drawn with."""
    blue = 0 if lora is None else 40 + sum(lora.name.encode()) % 200
    return round(weight * 250), (seed * 37) % 256, blue


class FakeRenderer:
    """Draws solid images coloured by fake_color; counts what it drew."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.lora: Path | None = None
        self.weight = 0.0
        self.drawn: list[dict] = []
        self.fail_after = fail_after

    def use_lora(self, path: Path | None) -> None:
        self.lora = path

    def set_weight(self, weight: float) -> None:
        self.weight = weight

    def draw(self, *, seeds: list[int], **job: object) -> list[object]:
        from PIL import Image

        images = []
        for seed in seeds:
            if self.fail_after is not None and len(self.drawn) >= self.fail_after:
                raise KeyboardInterrupt
            self.drawn.append({**job, "seed": seed, "lora": self.lora, "weight": self.weight})
            color = fake_color(self.lora, self.weight, seed)
            images.append(Image.new("RGB", (job["width"], job["height"]), color))
        return images
