"""kohyagen preview: the prompts and variations, the cache, resuming, the grid's layout."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from preview_fixtures import FakeRenderer, fake_color, make_preview_run
from train_fixtures import write_checkpoint

from kohyagen.cli import main
from kohyagen.config.sample_prompts import parse_prompt_line
from kohyagen.errors import ConfigError, UsageError
from kohyagen.report import preview as preview_module
from kohyagen.report.preview import PreviewOptions, render_preview
from kohyagen.report.preview_grid import LABEL_WIDTH, TITLE_HEIGHT
from kohyagen.report.preview_prompts import preview_prompts

FAST = PreviewOptions(checkpoints="all", weights=(0.5, 1.0), seeds=2)


def _render(run, options=FAST, renderer=None, **kwargs):
    renderer = renderer or FakeRenderer()
    result = render_preview(run, options, renderer=lambda _model: renderer, **kwargs)
    return result, renderer


def test_prompts_get_the_guides_variations():
    lines = ["sks --d 3", "sks, a, b, c, d --n ugly --d 9", "a, b"]
    prompts = preview_prompts([parse_prompt_line(x, i) for i, x in enumerate(lines)], "sks")
    texts = [(p.label, p.prompt, p.negative, p.seed) for p in prompts]
    assert texts[:3] == [("prompt 1", "sks", "", 3), ("prompt 2", "sks, a, b, c, d", "ugly", 9),
                         ("prompt 3", "a, b", "", 1002)]  # fmt: skip
    # the richest prompt that starts with the trigger: trigger in the middle, at the end,
    # and moved into the negative prompt; same seed as its source, so only that differs
    assert texts[3:] == [
        ("prompt 2, trigger in the middle", "a, b, sks, c, d", "ugly", 9),
        ("prompt 2, trigger at the end", "a, b, c, d, sks", "ugly", 9),
        ("prompt 2, trigger in the negative prompt", "a, b, c, d", "sks, ugly", 9),
    ]
    assert [p.index for p in prompts] == list(range(6))
    # no trigger known, or no prompt rich enough: no variations
    assert len(preview_prompts([parse_prompt_line(x, i) for i, x in enumerate(lines)], None)) == 3
    assert len(preview_prompts([parse_prompt_line("sks, a", 0)], "sks")) == 1
    assert all(p.steps == 4 for p in preview_prompts([parse_prompt_line("x --s 30", 0)], None,
                                                     steps=4))  # fmt: skip


def test_every_checkpoint_weight_seed_and_prompt_is_drawn_once(tmp_path):
    run = make_preview_run(tmp_path)
    result, fake = _render(run)
    prompts = 2 + 3  # the file's two, and three variations of the second
    # the base model once per prompt and seed, shared by every row
    assert result.total == prompts * 2 * (1 + 3 * 2) == result.drawn == len(fake.drawn)
    assert len(result.grids) == prompts and all(g.is_file() for g in result.grids)
    base = [d for d in fake.drawn if d["lora"] is None]
    assert len(base) == prompts * 2 and all(d["weight"] == 0 for d in base)
    assert {d["prompt"] for d in fake.drawn} >= {"red circle, simple background, outdoors"}
    # each LoRA file is loaded once: its images are drawn together
    order = [d["lora"] for d in fake.drawn if d["lora"] is not None]
    assert [k for i, k in enumerate(order) if i == 0 or order[i - 1] != k] == sorted(set(order),
        key=order.index)  # fmt: skip
    assert {d["seed"] for d in fake.drawn if d["prompt"] == "sks"} == {7, 8}
    assert {(d["width"], d["height"]) for d in fake.drawn} == {(64, 64), (64, 48)}


def test_interrupted_preview_draws_only_what_is_missing(tmp_path):
    run = make_preview_run(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _render(run, renderer=FakeRenderer(fail_after=5))
    images = run / "preview" / "images"
    # two seeds a batch: the two whole batches are kept, the interrupted one is not
    assert len(list(images.rglob("*.png"))) == 4
    assert not [p for p in images.rglob("*") if p.is_file() and ".tmp" in p.name]
    result, fake = _render(run)
    assert result.drawn == len(fake.drawn) == result.total - 4
    # everything cached: the model is not even loaded
    result = render_preview(run, FAST, renderer=lambda _m: pytest.fail("model loaded"))
    assert result.drawn == 0
    # a copied run folder (new mtimes) keeps its images; a retrained checkpoint does not
    output = run.parent.parent / "out" / "output"
    for checkpoint in output.glob("*.safetensors"):
        os.utime(checkpoint, (1, 1))
    assert render_preview(run, FAST, renderer=lambda _m: pytest.fail("model loaded")).drawn == 0
    write_checkpoint(output / "mylora-000002.safetensors", epoch=2, step=8, size=99)
    result, fake = _render(run)
    assert result.drawn == 5 * 2 * 2  # its prompts x seeds x weights
    assert {d["lora"].name for d in fake.drawn} == {"mylora-000002.safetensors"}
    # a changed prompt is drawn again, the unchanged one is not
    prompts = run / "sample_prompts.txt"
    prompts.write_text(prompts.read_text().replace("outdoors", "indoors"))
    result, fake = _render(run)
    assert result.drawn == len(fake.drawn) > 0
    drawn = {d["prompt"] for d in fake.drawn}
    assert "sks" not in drawn and all("indoors" in p for p in drawn)  # and its variations
    assert len(drawn) == 4


def test_grid_layout_rows_columns_labels_and_cells(tmp_path):
    from PIL import Image

    run = make_preview_run(tmp_path)
    options = PreviewOptions(checkpoints="1,3", weights=(0.5, 1.0), seeds=3)
    result, _fake = _render(run, options)
    index = json.loads(result.index.read_text())
    assert [c["epoch"] for c in index["checkpoints"]] == [1, 3]
    grid = index["grids"][1]
    assert grid["rows"] == ["epoch 1", "epoch 3 (picked)"]
    assert grid["columns"] == ["no LoRA", "weight 0.5", "weight 1"]
    assert grid["seeds"] == [20, 21, 22]
    geo = grid["layout"]
    image = Image.open(result.folder / grid["file"]).convert("RGB")
    assert list(image.size) == geo["size"]
    (ox, oy), (cw, ch), (tw, th) = geo["origin"], geo["cell"], geo["thumb"]
    assert (tw, th) == (160, 120)  # 64x48 images keep their aspect
    assert image.size == (ox + 3 * cw, oy + 2 * ch)
    checkpoints = [run.parent.parent / "out" / "output" / n
                   for n in ("mylora-000001.safetensors", "mylora.safetensors")]  # fmt: skip
    for r, lora in enumerate(checkpoints):
        for c, weight in enumerate([None, 0.5, 1.0]):
            for k, seed in enumerate(grid["seeds"]):
                x = ox + c * cw + geo["pad"] + k * (tw + geo["gap"]) + tw // 2
                y = oy + r * ch + geo["pad"] + th // 2
                want = fake_color(None if weight is None else lora, weight or 0, seed)
                assert image.getpixel((x, y)) == want, (r, c, k)

    def inked(box, red=False):
        crop = image.crop(box)
        pixels = [crop.getpixel((x, y)) for x in range(crop.width) for y in range(crop.height)]
        if red:
            return any(p[0] > 150 and p[1] < 80 for p in pixels)
        return any(sum(p) < 200 for p in pixels)

    assert inked((0, 0, image.size[0], TITLE_HEIGHT))  # the prompt as the title
    for c in range(3):
        assert inked((ox + c * cw, TITLE_HEIGHT, ox + (c + 1) * cw, oy))  # column labels
    assert inked((0, oy, LABEL_WIDTH, oy + ch))
    assert not inked((0, oy, LABEL_WIDTH, oy + ch), red=True)
    assert inked((0, oy + ch, LABEL_WIDTH, oy + 2 * ch), red=True)  # the picked row
    assert grid["cells"][1][2][0].startswith("images/mylora/w1.00/")


def test_checkpoint_selection_and_bad_inputs(tmp_path):
    run = make_preview_run(tmp_path)
    result, _ = _render(run, PreviewOptions(seeds=1, weights=(1.0,)))
    index = json.loads(result.index.read_text())
    assert index["checkpoints"] == [{"file": "mylora.safetensors", "epoch": 3, "picked": True}]
    with pytest.raises(UsageError, match="epoch") as bad:
        _render(run, PreviewOptions(checkpoints="2,9"))
    assert "saved epochs: 1, 2, 3" in bad.value.hint
    with pytest.raises(UsageError, match="best, all or a list"):
        _render(run, PreviewOptions(checkpoints="latest"))
    with pytest.raises(UsageError, match="prompts file has no prompt"):
        empty = tmp_path / "empty.txt"
        empty.write_text("# nothing\n")
        _render(run, PreviewOptions(prompts=empty))
    flux = make_preview_run(tmp_path / "flux", script="flux_train_network")
    with pytest.raises(ConfigError, match="flux_train_network"):
        _render(flux)


def test_preview_cli(tmp_path, monkeypatch):
    run = make_preview_run(tmp_path)
    fake = FakeRenderer()
    monkeypatch.setattr(preview_module, "default_renderer", lambda _model: fake)
    args = ["preview", str(run), "--checkpoints", "all", "--weights", "0.5,1", "--seeds", "1",
            "--steps", "2", "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["images"] == data["drawn"] == 5 * (1 + 3 * 2)
    assert {d["steps"] for d in fake.drawn} == {2}
    assert (run / "report.html").is_file() and data["report_html"] == str(run / "report.html")
    assert "preview/grid-00.png" in (run / "report.html").read_text()
    again = CliRunner().invoke(main, args[:-1])
    assert again.exit_code == 0 and "0 drawn, 35 reused" in again.stdout
    bad = CliRunner().invoke(main, ["preview", str(run), "--weights", "half"])
    assert bad.exit_code == 2 and "numbers separated by commas" in bad.output
    missing = CliRunner().invoke(main, ["preview", str(run), "--checkpoints", "7"])
    assert missing.exit_code == 2 and "saved epochs: 1, 2, 3" in missing.output
