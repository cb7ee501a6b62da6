"""`kohyagen dataset check` on the terminal and as JSON."""

from __future__ import annotations

import json

from click.testing import CliRunner
from dataset_fixtures import build_clean_dataset, build_defect_dataset

from kohyagen.cli import main


def invoke(*args: str):
    return CliRunner().invoke(main, ["dataset", *args], catch_exceptions=False)


def test_clean_dataset_exits_0_with_readable_tables(tmp_path):
    root = build_clean_dataset(tmp_path / "train")
    result = invoke(
        "check", str(root), "--trigger", "sks", "--caption-ext", ".txt", "--batch-size", "4"
    )
    assert result.exit_code == 0, result.output
    out = result.output
    for text in (
        "images × repeats",
        "160",
        "steps per epoch",
        "40 at batch size 4",
        "10_sks",
        "384x512",
        "no problems found",
        "sks (16)",
    ):
        assert text in out, text


def test_errors_exit_1_and_json_lists_findings(tmp_path):
    train, reg, expected = build_defect_dataset(tmp_path)
    result = invoke(
        "check",
        str(train),
        "--trigger",
        "sks",
        "--caption-ext",
        ".txt",
        "--reg",
        str(reg),
        "--json",
    )
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert len(data["findings"]) == len(expected)
    assert data["counts"]["error"] == sum(f["severity"] == "error" for f in data["findings"])
    assert {"root", "kind", "subsets", "buckets", "steps_per_epoch", "images"} <= set(data)
    table = invoke("check", str(train), "--trigger", "sks", "--caption-ext", ".txt")
    assert table.exit_code == 1
    assert "truncated" in table.output and "error(s)" in table.output


def test_model_and_bucket_options(tmp_path):
    root = build_clean_dataset(tmp_path / "train", n=2)
    result = invoke("check", str(root), "--model", "sdxl", "--caption-ext", ".txt", "--json")
    data = json.loads(result.output)
    assert data["model"] == "sdxl"
    assert {f["code"] for f in data["findings"]} == {"too-small", "too-few-images"}
    up = invoke("check", str(root), "--caption-ext", ".txt", "--bucket-upscale", "--json")
    assert json.loads(up.output)["buckets"] == {"448x576": 20}
    nu = invoke("check", str(root), "--caption-ext", ".txt", "--bucket-no-upscale", "--json")
    assert json.loads(nu.output)["buckets"] == {"384x512": 20}
    bad = invoke("check", str(root), "--model", "sd9")
    assert bad.exit_code == 2


def test_long_lists_are_folded_per_code(tmp_path):
    from dataset_fixtures import caption, solid

    for i in range(12):
        img = solid(tmp_path / "5_x" / f"i{i:02d}.png", size=(520, 520))
        caption(img.with_suffix(".txt"), "no trigger here")
    result = invoke("check", str(tmp_path), "--trigger", "sks", "--caption-ext", ".txt")
    assert result.exit_code == 0
    assert "... 4 more" in result.output
    # 12 trigger-missing and too-few-images: the true total, not the rows shown
    assert "13 warning(s)" in result.output.replace("\n", " ")
