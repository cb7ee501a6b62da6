"""Preview grids: one labelled PNG per prompt, and preview.json describing them.

Rows are checkpoints (the picked one marked), columns are "no LoRA" (the base model, the
same in every row, as the reference) then each LoRA weight; a cell holds the prompt's
seeds side by side, so a change that shows in every seed is the LoRA's and not chance.
preview.json records the geometry, so the HTML report (and a test) can find each cell.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kohyagen.atomic import write_text_atomic

if TYPE_CHECKING:
    from kohyagen.report.checkpoints import Checkpoint
    from kohyagen.report.preview_jobs import Job, PreviewOptions
    from kohyagen.report.preview_prompts import PreviewPrompt

THUMB = 160  # the longer side of each image in a grid
PAD = 6
GAP = 2
LABEL_WIDTH = 170
TITLE_HEIGHT = 30
HEADER_HEIGHT = 26
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
PICKED = (200, 30, 30)


def row_label(cp: Checkpoint, best: Path | None) -> str:
    name = f"epoch {cp.epoch}" if cp.epoch is not None else cp.path.stem
    return name + (" (picked)" if cp.path == best else "")


def column_labels(weights: tuple[float, ...]) -> list[str]:
    return ["no LoRA", *(f"weight {w:g}" for w in weights)]


def _thumb_size(prompt: PreviewPrompt) -> tuple[int, int]:
    scale = THUMB / max(prompt.width, prompt.height)
    return max(1, round(prompt.width * scale)), max(1, round(prompt.height * scale))


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """text cut with an ellipsis so that it fits width pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def layout(prompt: PreviewPrompt, rows: int, columns: int, seeds: int) -> dict[str, Any]:
    tw, th = _thumb_size(prompt)
    cell = [2 * PAD + seeds * tw + (seeds - 1) * GAP, 2 * PAD + th]
    origin = [LABEL_WIDTH, TITLE_HEIGHT + HEADER_HEIGHT]
    size = [origin[0] + columns * cell[0], origin[1] + rows * cell[1]]
    return {"origin": origin, "cell": cell, "thumb": [tw, th], "pad": PAD, "gap": GAP,
            "size": size}  # fmt: skip


def draw_grid(
    path: Path,
    prompt: PreviewPrompt,
    rows: list[str],
    columns: list[str],
    cells: list[list[list[Path]]],
    picked_row: int | None,
) -> dict[str, Any]:
    """Write the grid PNG; cells[row][column] holds the image paths of each seed."""
    from PIL import Image, ImageDraw

    seeds = len(cells[0][0])
    geo = layout(prompt, len(rows), len(columns), seeds)
    grid = Image.new("RGB", tuple(geo["size"]), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    title_font, font = _font(15), _font(13)
    title = f"{prompt.label}: {prompt.prompt}"
    if prompt.negative:
        title += f"   [negative: {prompt.negative}]"
    draw.text((8, 7), _fit(draw, title, title_font, geo["size"][0] - 16), fill=INK, font=title_font)
    ox, oy = geo["origin"]
    cw, ch = geo["cell"]
    tw, th = geo["thumb"]
    for c, label in enumerate(columns):
        x = ox + c * cw
        draw.text((x + PAD, TITLE_HEIGHT + 5), _fit(draw, label, font, cw - 2 * PAD), fill=INK,
                  font=font)  # fmt: skip
    for r, label in enumerate(rows):
        y = oy + r * ch
        color = PICKED if r == picked_row else INK
        draw.text((8, y + ch // 2 - 8), _fit(draw, label, font, LABEL_WIDTH - 12), fill=color,
                  font=font)  # fmt: skip
        draw.line([(0, y), (geo["size"][0], y)], fill=(225, 225, 225))
        for c in range(len(columns)):
            for k, image_path in enumerate(cells[r][c]):
                with Image.open(image_path) as im:
                    thumb = im.convert("RGB").resize((tw, th), Image.Resampling.LANCZOS)
                grid.paste(thumb, (ox + c * cw + PAD + k * (tw + GAP), y + PAD))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    grid.save(tmp)
    os.replace(tmp, path)
    return geo


def write_grids(
    folder: Path,
    jobs: list[Job],
    checkpoints: list[Checkpoint],
    best: Path | None,
    prompts: list[PreviewPrompt],
    options: PreviewOptions,
) -> tuple[list[Path], Path]:
    """One grid per prompt, and preview.json (prompts, rows, columns, geometry, images)."""
    by_cell: dict[tuple[Any, Any, int], list[Path]] = {}
    for job in jobs:
        key = (job.checkpoint.path if job.checkpoint else None, job.weight, job.prompt.index)
        by_cell.setdefault(key, []).append(job.path)
    rows = [row_label(cp, best) for cp in checkpoints]
    columns = column_labels(options.weights)
    picked = next((i for i, cp in enumerate(checkpoints) if cp.path == best), None)
    grids: list[Path] = []
    described = []
    for prompt in prompts:
        cells = [
            [by_cell[(None, None, prompt.index)]]
            + [by_cell[(cp.path, w, prompt.index)] for w in options.weights]
            for cp in checkpoints
        ]
        path = folder / f"grid-{prompt.index:02d}.png"
        geo = draw_grid(path, prompt, rows, columns, cells, picked)
        grids.append(path)
        described.append({
            "file": path.name, "prompt": prompt.to_dict(), "rows": rows, "columns": columns,
            "seeds": [prompt.seed + k for k in range(options.seeds)], "layout": geo,
            "cells": [[[os.path.relpath(p, folder) for p in cell] for cell in row]
                      for row in cells],
        })  # fmt: skip
    index = folder / "preview.json"
    data = {
        "format": 1,
        "checkpoints": [{"file": cp.path.name, "epoch": cp.epoch, "picked": cp.path == best}
                        for cp in checkpoints],
        "weights": list(options.weights),
        "grids": described,
    }  # fmt: skip
    write_text_atomic(index, json.dumps(data, indent=2, ensure_ascii=False))
    return grids, index
