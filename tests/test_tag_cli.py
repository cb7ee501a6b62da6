"""`kohyagen tag` through click's CliRunner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_tag_helpers import BLUE, CYAN, GREEN, RED, make_tagger, read_tags, solid

from kohyagen.cli import main


@pytest.fixture
def tagger(tmp_path):
    return make_tagger(tmp_path / "tagger")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    for name, color in (("red", RED), ("green", GREEN), ("blue", BLUE), ("cyan", CYAN)):
        solid(folder / f"{name}.png", color)
    (folder / "broken.jpg").write_bytes(b"junk")
    return folder


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_tag_json(images, tagger):
    (images / "green.txt").write_text("kept\n")
    result = invoke(
        "tag", images, "--model", tagger, "--trigger", "sks", "--rating", "--json",
        "--undesired-tags", "solo, blue_sky", "--always-first", "long hair",
        "--batch-size", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["tagged"], data["skipped"], data["failed"]) == (3, 1, 1)
    assert data["failures"][0]["path"].endswith("broken.jpg")
    assert data["provider"] == "CPU" and data["batch_size"] == 2
    assert data["tag_counts"]["explicit"] == 1
    assert read_tags(images / "red.txt") == ["sks", "long hair", "explicit", "1girl"]
    assert (images / "green.txt").read_text() == "kept\n"


def test_tag_text_summary_and_modes(images, tagger):
    result = invoke("tag", images, "--model", tagger, "--threshold", "0.9")
    assert result.exit_code == 0, result.output
    assert "tagged 4, skipped 0 (caption kept), failed 1" in result.stdout
    assert "on CPU" in result.stdout and "broken.jpg" in result.stdout
    assert "most frequent tags" in result.stdout
    assert read_tags(images / "red.txt") == ["1girl", "solo"]

    # Append with a lower threshold adds only what the caption lacks, spelled as asked.
    result = invoke("tag", images, "--model", tagger, "--mode", "append", "--keep-underscores")
    assert result.exit_code == 0
    assert read_tags(images / "red.txt") == ["1girl", "solo", "long_hair"]
    result = invoke(
        "tag", images, "--model", tagger, "--mode", "overwrite", "--caption-ext", ".txt"
    )
    assert read_tags(images / "red.txt") == ["1girl", "solo", "long hair"]
    result = invoke("tag", images, "--model", tagger)
    assert "tagged 0, skipped 4" in result.stdout


def test_character_threshold_option(images, tagger):
    result = invoke("tag", images, "--model", tagger, "--character-threshold", "0.9")
    assert result.exit_code == 0
    assert read_tags(images / "cyan.txt") == ["hatsune miku", "^_^", "blue sky"]


def test_recursive_option(tmp_path, tagger):
    # a plain subfolder needs --recursive (N_name/ folders are tagged without it: issue 15)
    solid(tmp_path / "root" / "x" / "a.png", RED)
    result = invoke("tag", tmp_path / "root", "--model", tagger)
    assert result.exit_code == 1 and "--recursive" in result.output
    result = invoke("tag", tmp_path / "root", "--model", tagger, "--recursive")
    assert result.exit_code == 0 and (tmp_path / "root" / "x" / "a.txt").exists()


def test_errors_are_one_line(tmp_path, images):
    result = invoke("tag", tmp_path / "missing", "--model", tmp_path)
    assert result.exit_code == 1
    assert "folder not found" in result.output and "Traceback" not in result.output
    result = invoke("tag", images, "--model", tmp_path / "nothing-here")
    assert result.exit_code == 1 and "neither an existing folder" in result.output
    result = invoke("tag", images, "--mode", "clobber")
    assert result.exit_code == 2
    result = invoke("tag", images, "--batch-size", "0")
    assert result.exit_code == 2


def test_model_folder_without_files(tmp_path, images):
    empty = tmp_path / "emptymodel"
    empty.mkdir()
    result = invoke("tag", images, "--model", empty)
    assert result.exit_code == 1
    assert "model.onnx is missing" in result.output
