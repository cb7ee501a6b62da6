"""A tiny random WD14-shaped tagger, so that `kohyagen demo` runs the tag stage offline.

Same contract as the real taggers (kohyagen.tagging): model.onnx takes
[batch, S, S, 3] float32 BGR pixels in 0..255 and gives one sigmoid score per row of
selected_tags.csv (tag_id, name, category, count; category 9 for ratings, 0 general).
Its scores come from the image's mean colour through random weights, so the tags it
writes are as meaningless as the demo LoRA, but every stage runs for real.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from kohyagen.errors import require

SIZE = 32
# (name, category): the four ratings first, as in the real tag lists
TAGS = (
    ("general", 9), ("sensitive", 9), ("questionable", 9), ("explicit", 9),
    ("simple_background", 0), ("no_humans", 0), ("circle", 0), ("square", 0),
    ("triangle", 0), ("red_theme", 0), ("green_theme", 0), ("blue_theme", 0),
)  # fmt: skip


def _csv() -> str:
    rows = ["tag_id,name,category,count"]
    rows += [f"{1000 + i},{name},{cat},{100 - i}" for i, (name, cat) in enumerate(TAGS)]
    return "\n".join(rows) + "\n"


def make_tiny_tagger(folder: str | Path, *, seed: int = 0) -> Path:
    """Write model.onnx and selected_tags.csv into folder (kept when already there)."""
    folder = Path(folder)
    model_path = folder / "model.onnx"
    if model_path.is_file() and (folder / "selected_tags.csv").is_file():
        return folder
    torch = require("torch")
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)

    # torch comes from require() at run time, so mypy cannot see its classes here
    class Tagger(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(3, len(TAGS), generator=generator) * 4)
            self.bias = torch.nn.Parameter(torch.randn(len(TAGS), generator=generator) - 1)

        def forward(self, pixels: Any) -> Any:  # [batch, S, S, 3] BGR 0..255
            mean = pixels.mean(dim=(1, 2)) / 255.0
            return torch.sigmoid(mean @ self.weight + self.bias)

    tmp = folder / f".model.{os.getpid()}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            Tagger().eval(), (torch.zeros(1, SIZE, SIZE, 3),), str(tmp),
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip
    os.replace(tmp, model_path)
    (folder / "selected_tags.csv").write_text(_csv(), encoding="utf-8")
    return folder
