"""A tiny ONNX tagger with the WD14 signature, for the tag tests (no tests here).

The model takes [batch, S, S, 3] float32 BGR pixels in 0..255 and gives sigmoid
scores computed from the per-channel means m = (B, G, R) / 255:
    score[tag] = sigmoid(m . W[:, tag] + bias[tag])
so a solid-colour image yields known tags. With m in BGR order, a pure red RGB
image gets the "red" tags only when the tagger really flips to BGR.

Scores for the solid images used in the tests (red = RGB 255,0,0 and so on):
    rating general 0.599 always; explicit: red 0.982, otherwise <= 0.5
    1girl  red 0.993   solo  red 0.971   long_hair  red 0.881   (CSV order: long_hair,
    1girl, solo, so the output order proves sorting by confidence)
    ^_^  green 0.993   blue_sky  blue 0.993   simple_background  white 0.881
    hatsune_miku (character)  cyan 0.953, blue 0.047
    kirisame_marisa (character)  blue or cyan 0.881
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# name, category, weights on (B, G, R), bias
TAGS: list[tuple[str, int, tuple[float, float, float], float]] = [
    ("general", 9, (0, 0, 0), 0.4),
    ("sensitive", 9, (0, 0, 0), -2.0),
    ("questionable", 9, (0, 0, 0), -3.0),
    ("explicit", 9, (0, 0, 8), -4.0),
    ("long_hair", 0, (0, 0, 6), -4.0),
    ("1girl", 0, (0, 0, 6), -1.0),
    ("solo", 0, (0, 0, 6), -2.5),
    ("^_^", 0, (0, 10, 0), -5.0),
    ("blue_sky", 0, (10, 0, 0), -5.0),
    ("simple_background", 0, (4, 4, 4), -10.0),
    ("hatsune_miku", 4, (6, 6, 0), -9.0),
    ("kirisame_marisa", 4, (4, 0, 0), -2.0),
]

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
CYAN = (0, 255, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def expected_scores(rgb_mean: tuple[float, float, float]) -> dict[str, float]:
    """The scores the tiny model gives an image with these RGB channel means."""
    r, g, b = (c / 255 for c in rgb_mean)
    m = np.array([b, g, r])
    return {name: float(1 / (1 + np.exp(-(m @ np.array(w) + bias)))) for name, _, w, bias in TAGS}


def write_tags_csv(path: Path, tags=TAGS) -> Path:
    lines = ["tag_id,name,category,count"]
    lines += [f"{1000 + i},{name},{cat},{100 - i}" for i, (name, cat, _, _) in enumerate(tags)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_model(
    path: Path,
    *,
    size: int = 32,
    batch: int | None = None,
    layout: str = "NHWC",
    tags=TAGS,
    input_name: str = "input",
    output_count: int | None = None,
) -> Path:
    """Write the tiny tagger; batch=None gives a dynamic batch dimension."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = len(tags) if output_count is None else output_count
    weights = np.zeros((3, n), dtype=np.float32)
    bias = np.zeros((n,), dtype=np.float32)
    for i, (_, _, w, b) in enumerate(tags[:n]):
        weights[:, i] = w
        bias[i] = b
    batch_dim: int | str = batch if batch is not None else "batch"
    if layout == "NHWC":
        shape, axes = [batch_dim, size, size, 3], [1, 2]
    else:
        shape, axes = [batch_dim, 3, size, size], [2, 3]
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["mean"], axes=axes, keepdims=0),
        helper.make_node("Div", ["mean", "c255"], ["unit"]),
        helper.make_node("MatMul", ["unit", "W"], ["logits0"]),
        helper.make_node("Add", ["logits0", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_wd14",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch_dim, n])],
        initializer=[
            numpy_helper.from_array(np.array(255.0, dtype=np.float32), "c255"),
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(bias, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_tagger(folder: Path, **kwargs) -> Path:
    """A local tagger folder: model.onnx + selected_tags.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    build_model(folder / "model.onnx", **kwargs)
    write_tags_csv(folder / "selected_tags.csv", kwargs.get("tags", TAGS))
    return folder


def solid(path: Path, color=RED, size=(32, 32), mode="RGB") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    fill = (*color, 255) if mode == "RGBA" and len(color) == 3 else color
    Image.new(mode, size, fill).save(path)
    return path


def read_tags(path: Path) -> list[str]:
    return [t.strip() for t in path.read_text(encoding="utf-8").strip().split(",")]
