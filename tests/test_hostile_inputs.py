"""Hostile corpus, item 4: inputs checked at the edge (exit 2 with a message).

Each case runs the command as a user would and asserts the exit code, the message, no
traceback, and that the user's files are unchanged."""

from __future__ import annotations

import pytest
from hostile_helpers import assert_known, hashes, invoke

from kohyagen.config.ranges import check_option_value
from kohyagen.validate import caption_extension_problem, name_problem, trigger_problem
from tests.conftest import make_image


@pytest.fixture
def images(tmp_path):
    for i in range(3):
        make_image(tmp_path / "images" / f"{i}.png", color=(40 * i, 10, 10))
    return tmp_path / "images"


@pytest.fixture
def train_dir(tmp_path):
    for i in range(3):
        make_image(tmp_path / "train" / "10_sks" / f"{i}.png", color=(40 * i, 10, 10))
        (tmp_path / "train" / "10_sks" / f"{i}.txt").write_text("sks, red\n")
    return tmp_path / "train"


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--name", "a\nb"], "control character"),
        (["--name", "x" * 201], "longer than 200 bytes"),
        (["--name", "../up"], "path separator"),
        (["--trigger", "sks, dog"], "comma"),
        (["--trigger", "sks\ndog"], "control character"),
        (["--price-per-hour", "nan", "--budget", "1"], "--price-per-hour must be a finite"),
        (["--budget", "inf"], "--budget must be a finite"),
        (["--budget", "-3"], "--budget must be at least 0"),
    ],
)
def test_run_refuses_bad_names_and_numbers(monkeypatch, tmp_path, images, flags, needle):
    monkeypatch.chdir(tmp_path)
    before = hashes(images)
    base = {"--name": "ok", "--trigger": "sks"}
    for flag in ("--name", "--trigger"):
        if flag not in flags:
            flags = [*flags, flag, base[flag]]
    result = invoke("run", images, "--gpu", "cpu", "-y", *flags)
    assert_known(result, 2, needle)
    assert hashes(images) == before
    assert not (tmp_path / "runs").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ("train_batch_size=0", "train_batch_size must be at least 1"),
        ("learning_rate=nan", "learning_rate must be a finite number"),
        ("max_train_epochs=0", "max_train_epochs must be at least 1"),
        ("unet_lr=-1e-4", "unet_lr must be above 0"),
        ('output_name="a/b"', "path separator"),
        ('caption_extension="/../evil.txt"', "not a caption extension"),
    ],
)
def test_config_set_out_of_range(tmp_path, train_dir, setting, needle):
    before = hashes(train_dir)
    out = tmp_path / "cfg"
    result = invoke(
        "config", train_dir, "--model", "sd15", "--gpu", "rtx4090", "-o", out, "--set", setting
    )
    assert_known(result, 2, needle)
    assert hashes(train_dir) == before and not out.exists()


def test_config_name_with_newline(tmp_path, train_dir):
    out = tmp_path / "cfg"
    result = invoke(
        "config", train_dir, "--model", "sd15", "--gpu", "rtx4090", "-o", out, "--name", "a\tb"
    )
    assert_known(result, 2, "control character")
    assert not out.exists()


def test_prepare_concept_with_newline(tmp_path, images):
    before = hashes(images)
    result = invoke("dataset", "prepare", images, "-o", tmp_path / "out", "--concept", "a\nb")
    assert_known(result, 2, "control character")
    assert hashes(images) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("threshold", ["1.5", "-0.1", "nan"])
def test_tag_threshold_outside_zero_one(tmp_path, images, threshold):
    before = hashes(images)
    result = invoke("tag", images, "--model", tmp_path / "nowhere", "--threshold", threshold)
    assert_known(result, 2, "threshold")
    assert hashes(images) == before


@pytest.mark.parametrize("price", ["nan", "-1", "inf"])
def test_estimate_refuses_bad_price(images, price):
    result = invoke("estimate", "--images", "10", "--gpu", "rtx4090", "--price-per-hour", price)
    assert_known(result, 2, "--price-per-hour")


def test_bucket_options_that_contradict_the_resolution_are_findings(images):
    before = hashes(images)
    result = invoke(
        "dataset", "check", images, "--resolution", "512", "--min-bucket-reso", "2048", "--json"
    )
    assert_known(result, 1, "bucket-settings")
    assert hashes(images) == before


def test_rules_in_plain_words():
    assert check_option_value("train_batch_size", 0) == "train_batch_size must be at least 1, got 0"
    assert check_option_value("learning_rate", 1e-4) is None
    assert check_option_value("network_dropout", 1.5) is not None
    assert check_option_value("optimizer_type", "AdamW") is None
    assert name_problem("é" * 100) is None and name_problem("é" * 101) is not None
    assert caption_extension_problem(".txt") is None
    assert caption_extension_problem(".png") is not None
    assert trigger_problem("sks") is None


def test_a_concept_folder_name_with_a_newline_is_a_finding(tmp_path):
    folder = tmp_path / "train" / "10_sks\ndog"
    for i in range(3):
        make_image(folder / f"{i}.png", color=(40 * i, 10, 10))
    before = hashes(tmp_path / "train")
    result = invoke("dataset", "check", tmp_path / "train", "--json")
    assert_known(result, result.exit_code, "folder-name", "control character")
    assert hashes(tmp_path / "train") == before
