"""Hostile corpus, item 2: special files (FIFOs, devices, links to /dev/zero) are reported,
never a hang or an exhausted memory. Each case asserts the exit code, the message, no
traceback and unchanged user files; deadline() turns a hang into a failure."""

from __future__ import annotations

import json
import os

import pytest
from hostile_helpers import assert_known, deadline, hashes, invoke
from test_tag_helpers import RED, make_tagger, read_tags, solid

from kohyagen import safe_io


@pytest.fixture
def tagger(tmp_path):
    return make_tagger(tmp_path / "tagger")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    solid(folder / "a.png", RED)
    solid(folder / "b.png", RED)
    return folder


def test_safe_io_refuses_fifo_device_and_oversize(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "big").write_bytes(b"x" * 100)
    with deadline(10):
        with pytest.raises(safe_io.NotRegularFile, match="FIFO"):
            safe_io.read_bytes(tmp_path / "fifo")
        with pytest.raises(safe_io.NotRegularFile, match="device"):
            safe_io.read_bytes(tmp_path / "zero")
    with pytest.raises(safe_io.FileTooLarge):
        safe_io.read_bytes(tmp_path / "big", limit=99)
    assert safe_io.read_bytes(tmp_path / "big", limit=100) == b"x" * 100


@pytest.mark.parametrize("mode", ["skip", "append", "overwrite"])
def test_tag_with_a_fifo_caption_does_not_hang(images, tagger, mode):
    os.mkfifo(images / "a.txt")
    before = hashes(images)
    with deadline(60):
        result = invoke("tag", images, "--model", tagger, "--mode", mode, "--json")
    assert_known(result, 0, "a.txt is not a regular file")
    data = json.loads(result.stdout)
    assert (data["tagged"], data["failed"]) == (1, 1)
    assert hashes(images)["a.txt"] == before["a.txt"]  # still the FIFO
    assert read_tags(images / "b.txt")


def test_tag_with_a_caption_linked_to_dev_zero(images, tagger):
    (images / "a.txt").symlink_to("/dev/zero")
    (images / "b.txt").symlink_to("/dev/zero")
    with deadline(60):
        result = invoke("tag", images, "--model", tagger, "--mode", "append")
    assert_known(result, 1, "every image failed", "not a regular file")
    assert os.readlink(images / "a.txt") == "/dev/zero"


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_lint_on_a_special_file(tmp_path, kind):
    path = tmp_path / "training_config.toml"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    with deadline(30):
        result = invoke("lint", path)
    assert_known(result, 1, "not a regular file")


def test_dataset_check_with_special_captions_and_images(tmp_path):
    folder = tmp_path / "images"
    solid(folder / "a.png", RED)
    solid(folder / "b.png", RED)
    os.mkfifo(folder / "a.txt")
    (folder / "b.txt").symlink_to("/dev/zero")
    (folder / "c.png").symlink_to("/dev/zero")
    before = hashes(folder)
    with deadline(60):
        result = invoke("dataset", "check", folder, "--json")
    assert result.exit_code in (0, 1), result.output
    assert_known(result, result.exit_code)
    assert hashes(folder) == before


def test_prepare_with_a_caption_linked_to_dev_zero(tmp_path):
    folder = tmp_path / "images"
    solid(folder / "a.png", RED)
    (folder / "a.txt").symlink_to("/dev/zero")
    before = hashes(folder)
    with deadline(60):
        result = invoke("dataset", "prepare", folder, "-o", tmp_path / "out", "--concept", "sks")
    assert_known(result, result.exit_code)
    assert result.exit_code in (0, 1)
    assert hashes(folder) == before


@pytest.mark.parametrize("which", ["model.onnx", "selected_tags.csv"])
def test_tagger_files_that_are_fifos(tmp_path, images, which):
    tagger = make_tagger(tmp_path / "tagger")
    (tagger / which).unlink()
    os.mkfifo(tagger / which)
    before = hashes(images)
    with deadline(60):
        result = invoke("tag", images, "--model", tagger)
    assert_known(result, 1, which)  # "missing": is_file() is false for a FIFO
    assert hashes(images) == before


def test_estimate_with_a_prices_file_that_is_a_fifo(tmp_path):
    prices = tmp_path / "prices.toml"
    os.mkfifo(prices)
    with deadline(30):
        result = invoke("estimate", "--images", "10", "--gpu", "rtx4090", "--prices", prices)
    assert_known(result, 1, "not a regular file")


def test_report_html_dataset_facts_skip_fifo_captions_and_images(tmp_path):
    """report.html's dataset section reads captions, images and the dataset config through
    safe_io too: a FIFO among them is passed over, never a hang of `kohyagen report`."""
    from kohyagen.report.html_data import dataset_facts

    folder = tmp_path / "10_sks"
    solid(folder / "a.png", RED)
    (folder / "a.txt").write_text("sks, red\n", encoding="utf-8")
    solid(folder / "b.png", RED)
    os.mkfifo(folder / "b.txt")  # a caption that is a FIFO
    os.mkfifo(folder / "c.png")  # an "image" that is a FIFO
    config = tmp_path / "dataset_config.toml"
    config.write_text(
        f'[general]\ncaption_extension = ".txt"\n[[datasets]]\nresolution = 64\n'
        f'[[datasets.subsets]]\nimage_dir = "{folder}"\nnum_repeats = 10\n',
        encoding="utf-8",
    )
    with deadline(20):
        facts = dataset_facts(config)
    assert facts is not None
    assert facts.images == 3 and facts.images_x_repeats == 30
    assert facts.tags == {"sks": 1, "red": 1}
    assert sum(facts.buckets.values()) == 2  # the FIFO "image" has no size to bucket
    fifo_config = tmp_path / "fifo.toml"
    os.mkfifo(fifo_config)
    with deadline(20):
        assert dataset_facts(fifo_config) is None
