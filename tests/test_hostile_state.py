"""Hostile corpus, item 5: state that tells the truth.

A finished run whose LoRA was deleted, Ctrl-C in a stage, hand-damaged manifests,
and --json for file names that are not UTF-8. Each asserts the exit code, the message,
no traceback and unchanged user files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from hostile_helpers import assert_known, hashes, invoke
from test_tag_helpers import solid

from kohyagen.run import stages
from kohyagen.run.manifest import Manifest
from tests.test_run_pipeline import FakeStages


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    for i in range(4):
        solid(folder / f"{i}.png", (60 * i, 0, 0))
        (folder / f"{i}.txt").write_text("sks, red\n")
    return folder


def run(images, tmp_path, *extra):
    return invoke(
        "run", images, "--name", "x", "--trigger", "sks", "--gpu", "rtx4090", "-y",
        "--run-dir", tmp_path / "run", *extra,
    )  # fmt: skip


def test_finished_run_without_its_lora_is_not_ready(monkeypatch, tmp_path, images):
    FakeStages(monkeypatch)
    assert_known(run(images, tmp_path), 0, "LoRA ready")
    shutil.rmtree(tmp_path / "run" / "output")
    result = run(images, tmp_path)
    assert_known(result, 1, "no longer there", "--restart")
    assert "LoRA ready" not in result.output
    assert_known(run(images, tmp_path, "--restart"), 0, "LoRA ready")


@pytest.mark.parametrize("stage", ["check", "prepare", "tag", "config", "train", "pick"])
def test_ctrl_c_in_a_stage_exits_130_and_is_recorded(monkeypatch, tmp_path, images, stage):
    FakeStages(monkeypatch)
    before = hashes(images)

    def interrupted(ctx):
        raise KeyboardInterrupt

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, stage, interrupted)
    result = run(images, tmp_path)
    assert result.exit_code == 130 and "interrupted" in result.output
    assert "Traceback" not in result.output
    manifest = Manifest.load(tmp_path / "run")
    assert manifest.stage(stage).get("error") == "interrupted"
    assert hashes(images) == before


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: {**d, "stages": []},
        lambda d: {**d, "stages": {**d["stages"], "train": "done"}},
        lambda d: {**d, "inputs": None},
        "truncated",
    ],
)
def test_damaged_manifest_has_a_message_and_restart_works(monkeypatch, tmp_path, images, damage):
    FakeStages(monkeypatch)
    assert_known(run(images, tmp_path), 0)
    path = tmp_path / "run" / "kohyagen.json"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.write_text(json.dumps(damage(json.loads(path.read_text()))))
    before = hashes(images)
    assert_known(run(images, tmp_path), 1, "manifest", "--restart")
    assert_known(run(images, tmp_path, "--restart"), 0, "LoRA ready")
    assert hashes(images) == before


def test_json_is_valid_utf8_for_any_file_name(tmp_path, subprocess_env):
    folder = tmp_path / "images"
    solid(folder / "ok.png", (1, 2, 3))
    solid(folder / os.fsdecode(b"\xff\xfe.png"), (3, 2, 1))
    out = subprocess.run(
        [sys.executable, "-m", "kohyagen", "dataset", "check", str(folder), "--json"],
        capture_output=True, env=subprocess_env, timeout=120,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    data = json.loads(out.stdout.decode("utf-8"))  # strict: invalid UTF-8 raises
    names = json.dumps(data)
    assert "\\udcff\\udcfe.png" in names
