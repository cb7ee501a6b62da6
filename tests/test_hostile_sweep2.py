"""Hostile corpus, second sweep (after the module splits): what a demanding user found.

Each case asserts the exit code, the message, no traceback and unchanged user files."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from hostile_helpers import assert_known, deadline, hashes, invoke
from train_fixtures import fake_env, make_checkout, make_run, write_configs

from kohyagen.config.lint_captions import caption_findings
from kohyagen.dataset.layout import Subset
from kohyagen.errors import RunStateError
from kohyagen.launch import train as launch
from kohyagen.launch.run_folder import choose_run_dir
from kohyagen.run.stages import _missing_captions
from kohyagen.trainer.captions import read_caption
from kohyagen.trainer.dataset_spec import SubsetSpec
from tests.conftest import make_image

# the longest name a file system allows (255 bytes): its .txt caption fits, the
# .caption (kohya's default) and .tags names the lookups also try do not
LONG = "a" * 251


@pytest.fixture
def long_named(tmp_path):
    folder = tmp_path / "train" / "10_sks"
    make_image(folder / f"{LONG}.png")
    (folder / f"{LONG}.txt").write_text("sks, red\n")
    make_image(folder / "b.png", color=(9, 9, 200))
    (folder / "b.txt").write_text("sks, blue\n")
    return tmp_path / "train"


def test_config_and_lint_on_an_image_with_a_255_byte_name(tmp_path, long_named):
    """A caption name too long to exist is a caption that is not there, as kohya's
    os.path.isfile says, not an error that stops config, lint or the run's tag stage."""
    before = hashes(long_named)
    out = tmp_path / "cfg"
    result = invoke("config", long_named, "--model", "sd15", "--gpu", "24gb", "-o", out)
    assert_known(result, 0)
    assert_known(invoke("lint", out / "training_config.toml"), 0)
    assert hashes(long_named) == before
    folder = long_named / "10_sks"
    images = (folder / f"{LONG}.png", folder / "b.png")
    assert Subset(folder, 10, "sks", images).caption_files(".caption") == []
    assert caption_findings(
        "x.toml", "subset", list(images), caption_extension=".caption", class_tokens=None,
        where="subset",
    )  # fmt: skip
    assert _missing_captions(long_named, ".caption", exclude=tmp_path / "run") == list(images)
    # the builtin trainer trains it on the class tokens, as kohya does
    assert read_caption(images[0], SubsetSpec(folder, 10, "sks", ".caption")) == "sks"


def test_prepare_says_which_captions_it_could_not_read(tmp_path):
    """check calls an unreadable caption an error; prepare took the image and wrote the
    trigger alone as its caption without a word. It now lists the caption as skipped."""
    folder = tmp_path / "images"
    make_image(folder / "a.png")
    make_image(folder / "b.png", color=(9, 9, 200))
    (folder / "b.txt").write_text("sks, blue\n")
    os.mkfifo(folder / "a.txt")
    before = hashes(folder)
    with deadline(60):
        result = invoke("dataset", "prepare", folder, "-o", tmp_path / "out", "--concept", "sks",
                        "--trigger", "sks", "--json")  # fmt: skip
    assert_known(result, 0)
    skipped = json.loads(result.stdout)["skipped"]
    assert [(Path(s["file"]).name, "FIFO" in s["reason"]) for s in skipped] == [("a.txt", True)]
    assert hashes(folder) == before


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--model", "sd15", "--model-file", "dit=x.safetensors"], "sd15 takes one base model"),
        (["--model", "flux", "--model-file", "bogus=x.safetensors"], "no model file 'bogus'"),
    ],
)
def test_run_refuses_a_model_file_its_model_does_not_take_before_any_stage(
    monkeypatch, tmp_path, flags, needle
):
    """config refuses these at once; run refused them only in its config stage, after
    check, prepare and a tagging run that may take an hour."""
    monkeypatch.chdir(tmp_path)
    make_image(tmp_path / "images" / "a.png")
    before = hashes(tmp_path / "images")
    result = invoke("run", tmp_path / "images", "--name", "ok", "--trigger", "sks",
                    "--gpu", "cpu", "-y", *flags)  # fmt: skip
    assert_known(result, 1, needle)
    assert hashes(tmp_path / "images") == before
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_a_trainer_that_outlived_a_killed_kohyagen_keeps_its_folder(tmp_path):
    """kill -9 of kohyagen leaves its trainer running (its own process group, so that a
    stop reaches accelerate's children); train.json named only kohyagen's pid, so a run
    started again in the folder trained beside the orphan, both writing output/."""
    checkout = make_checkout(tmp_path)
    config, _ = write_configs(tmp_path, epochs=50)
    run_dir = tmp_path / "run"
    seen: list[str] = []

    def on_progress(p):
        if p.step >= 3 and not seen:
            state = json.loads((run_dir / "train.json").read_text())
            state["pid"] = 2**22 + 12345  # kohyagen itself gone, as after a kill -9
            (run_dir / "train.json").write_text(json.dumps(state))
            with pytest.raises(RunStateError) as err:
                choose_run_dir("mylora", run_dir, cwd=tmp_path)
            seen.append(str(err.value) + (err.value.hint or ""))
            os.kill(os.getpid(), signal.SIGINT)

    env = fake_env(steps=20, step_sleep=0.02, losses="0.3")
    result = launch.train(
        config, sd_scripts=checkout, cwd=tmp_path, env=env, run_dir=run_dir,
        on_progress=on_progress,
    )  # fmt: skip
    assert result.status == "interrupted"
    assert seen and "already running" in seen[0] and "kill -- -" in seen[0], seen
    # once the trainer is gone the folder is free again
    assert choose_run_dir("mylora", run_dir, cwd=tmp_path) == run_dir


def test_pick_twice_leaves_no_temp_file(tmp_path):
    """The second pick links the same checkpoint again: a rename of a hard link onto
    another link of the same file does nothing (POSIX) and left the temp link behind,
    one more hidden copy per pick (cp -a of a run folder keeps the links, so its first
    pick did the same)."""
    run = make_run(tmp_path, [0.5, 0.4, 0.3])
    assert_known(invoke("pick", run), 0)
    output = tmp_path / "out" / "output"
    before = sorted(p.name for p in output.iterdir())
    assert_known(invoke("pick", run), 0)
    assert sorted(p.name for p in output.iterdir()) == before
    assert not [p for p in output.iterdir() if p.name.endswith(".kohyagen-tmp")]


@pytest.mark.parametrize(
    ("content", "code", "needle"),
    [
        (b"\xff\xfe bad\n", 1, "not UTF-8"),
        (None, 1, "not a regular file (a FIFO)"),
    ],
)
def test_preview_with_a_hostile_prompts_file(tmp_path, content, code, needle):
    """A non-UTF-8 prompts file was "(this is a bug)"; a FIFO was "the run has no
    sample_prompts file", which the user did not ask about."""
    from preview_fixtures import make_preview_run

    run = make_preview_run(tmp_path)
    prompts = tmp_path / "prompts.txt"
    if content is None:
        os.mkfifo(prompts)
    else:
        prompts.write_bytes(content)
    with deadline(60):
        result = invoke("preview", run, "--prompts", prompts, "--seeds", "1")
    assert_known(result, code, needle)


def test_report_with_a_sample_prompts_file_that_is_not_utf8(tmp_path):
    from preview_fixtures import make_preview_run

    run = make_preview_run(tmp_path)
    config = (run / "training_config.toml").read_text()
    own = next(line for line in config.splitlines() if line.startswith("sample_prompts"))
    Path(own.split("=", 1)[1].strip().strip('"')).write_bytes(b"\xff\xfe a red square\n")
    assert_known(invoke("report", run), 0)


@pytest.mark.parametrize("weight", ["nan", "inf", "1e400", "-inf"])
def test_preview_refuses_weights_that_are_not_finite(tmp_path, weight):
    from preview_fixtures import make_preview_run

    result = invoke("preview", make_preview_run(tmp_path), "--weights", f"0.5,{weight}")
    assert_known(result, 2, "finite")


DEEP = "[" * 5000 + "]" * 5000  # a TOML array nested past Python's recursion limit


def test_a_toml_nested_too_deeply_is_a_known_problem(tmp_path):
    """The TOML readers recurse per nesting level: a deep array was RecursionError,
    "(this is a bug)", in lint, train and estimate's prices file."""
    config = tmp_path / "training_config.toml"
    config.write_text(f"network_args = {DEEP}\n")
    assert_known(invoke("lint", config), 1, "nested too deeply")
    assert_known(invoke("train", config, "--dry-run"), 1, "nested too deeply")
    prices = tmp_path / "prices.toml"
    prices.write_text(f"x = {DEEP}\n")
    result = invoke("estimate", "--model", "sd15", "--gpu", "rtx4090", "--images", "20",
                    "--prices", prices)  # fmt: skip
    assert_known(result, 1, "nested too deeply")


def test_set_with_a_value_nested_too_deeply(tmp_path, long_named):
    result = invoke("config", long_named, "--model", "sd15", "--gpu", "24gb",
                    "-o", tmp_path / "cfg", "--set", f"network_args={DEEP}")  # fmt: skip
    assert_known(result, result.exit_code)
    assert result.exit_code in (1, 2)


def test_check_of_a_photo_with_a_broken_exif_entry_prints_no_python_warning(tmp_path):
    """Pillow warns "Tag data larger than file" on an EXIF entry whose value lies past
    the block; the warning went to the terminal as a raw Python UserWarning."""
    import io
    import struct
    import warnings

    from PIL import Image

    entry = struct.pack("<HHII", 0x010F, 2, 40, 30)  # make: 40 bytes at 30, past the end
    tiff = b"II" + struct.pack("<HIH", 42, 8, 1) + entry + struct.pack("<I", 0)
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 9, 9)).save(buf, "JPEG", exif=b"Exif\0\0" + tiff)
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(buf.getvalue())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke("dataset", "check", folder, "--json")
    assert result.exit_code in (0, 1) and "Traceback" not in result.output
    assert [str(w.message) for w in caught] == []


def test_report_past_the_file_size_limit_is_a_known_problem(tmp_path, subprocess_env):
    """`ulimit -f` (RLIMIT_FSIZE) makes a write fail with EFBIG, as a full disk fails
    with ENOSPC; report called it "(this is a bug)"."""
    import resource
    import subprocess
    import sys

    run = make_run(tmp_path, [0.5, 0.4, 0.3])

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    out = subprocess.run(
        [sys.executable, "-m", "kohyagen", "report", str(run)], capture_output=True,
        env=subprocess_env, timeout=120, preexec_fn=small_files,
    )  # fmt: skip
    err = out.stderr.decode()
    assert out.returncode == 1, err
    assert "this is a bug" not in err and "larger than this system allows" in err, err
    assert not [p for p in run.iterdir() if p.name.endswith(".kohyagen-tmp")]


def test_ctrl_c_in_runs_training_exits_130_as_train_does(monkeypatch, tmp_path):
    """`kohyagen train` exits 130 when Ctrl-C stops the trainer; `kohyagen run` said
    the same words with the exit code of a failed training (3)."""
    from types import SimpleNamespace

    from kohyagen.launch import train as train_module
    from kohyagen.run import stages, stages_training
    from kohyagen.run.manifest import Manifest
    from tests.test_run_pipeline import FakeStages

    FakeStages(monkeypatch)
    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "train", stages_training.stage_train)
    monkeypatch.setattr(stages_training, "_check_where_training_runs", lambda ctx, gpu: None)
    monkeypatch.setattr(train_module, "train",
                        lambda *a, **k: SimpleNamespace(status="interrupted"))  # fmt: skip
    make_image(tmp_path / "images" / "a.png")
    result = invoke("run", tmp_path / "images", "--name", "x", "--trigger", "sks",
                    "--gpu", "rtx4090", "-y", "--backend", "builtin",
                    "--run-dir", tmp_path / "run")  # fmt: skip
    assert_known(result, 130, "training interrupted", "run the same command again")
    assert Manifest.load(tmp_path / "run").status("train") == "failed"


@pytest.mark.parametrize("fmt", ["WEBP", "GIF", "TIFF", "PNG"])
def test_prepare_skips_an_image_it_cannot_decode_for_conversion(tmp_path, fmt):
    """The default check reads headers only, so a file cut short in its pixel data passes
    it; prepare's conversion then decodes it and Pillow's "image file is truncated" was
    "(this is a bug)". The image is skipped with the reason, as an unreadable one is."""
    import io

    import numpy as np
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    make_image(folder / "good.png")
    pixels = np.random.default_rng(0).integers(0, 256, (120, 150, 4), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buf, fmt)  # RGBA: flattened, so decoded
    data = buf.getvalue()
    (folder / f"cut.{fmt.lower()}").write_bytes(data[: len(data) * 2 // 3])
    before = hashes(folder)
    result = invoke("dataset", "prepare", folder, "-o", tmp_path / "out", "--concept", "sks",
                    "--json")  # fmt: skip
    if result.exit_code == 0:
        skipped = {Path(s["file"]).name: s["reason"] for s in json.loads(result.stdout)["skipped"]}
        assert f"cut.{fmt.lower()}" in skipped, result.stdout
        assert sorted(p.name for p in (tmp_path / "out").glob("*/*")) == ["good.png"]
    else:  # the header probe already refused it
        assert_known(result, 1)
    assert "this is a bug" not in result.output
    assert hashes(folder) == before
    assert not [p for p in (tmp_path / "out").rglob("*") if ".kohyagen" in p.name]


def test_the_folded_row_of_a_check_names_no_one_files_fix(tmp_path):
    """"... 3 more files with missing-caption (fix: write i.txt)": the fold row carried
    the fix of the first file it hides, as if it were the fix of all of them."""
    folder = tmp_path / "images"
    for i in range(12):
        make_image(folder / f"img{i:02d}.png", color=(20 * i, 9, 9))
    (folder / "img00.txt").write_text("sks\n")  # the others lack one
    result = invoke("dataset", "check", folder)
    assert_known(result, 0, "more files with missing-caption")
    text = " ".join(result.output.split())  # rich wraps the long row
    fold = text.split("more files with missing-caption", 1)[1].split("\n", 1)[0][:60]
    assert "(fix: write" not in fold, fold


@pytest.mark.parametrize("trigger", ["a\nb", "sks, dog"])
def test_config_and_prepare_refuse_a_trigger_run_refuses(tmp_path, long_named, trigger):
    """run and tag refuse these triggers; config wrote the newline into
    sample_prompts.txt (two broken prompts) and prepare into every caption (kohya reads
    the first line: each image trained on "a" alone)."""
    before = hashes(long_named)
    out = tmp_path / "cfg"
    result = invoke("config", long_named, "--model", "sd15", "--gpu", "24gb", "-o", out,
                    "--trigger", trigger)  # fmt: skip
    assert_known(result, 2, "the trigger")
    assert not out.exists()
    images = tmp_path / "images"
    make_image(images / "a.png")
    result = invoke("dataset", "prepare", images, "--concept", "sks", "-o", tmp_path / "td",
                    "--trigger", trigger)  # fmt: skip
    assert_known(result, 2, "the trigger")
    assert not (tmp_path / "td").exists()
    assert hashes(long_named) == before


def test_lint_names_image_files_kohya_would_hang_on(tmp_path):
    """dataset check calls a FIFO or a link to /dev/zero named like an image an error;
    lint of a dataset config over the same folder said nothing, and kohya's glob lists
    them, then blocks or reads forever when it loads them."""
    folder = tmp_path / "images"
    make_image(folder / "a.png")
    (folder / "a.txt").write_text("sks\n")
    os.mkfifo(folder / "fifo.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    config = tmp_path / "dataset_config.toml"
    config.write_text('[general]\ncaption_extension = ".txt"\n[[datasets]]\nresolution = 512\n'
                      f'[[datasets.subsets]]\nimage_dir = "{folder}"\nnum_repeats = 1\n')  # fmt: skip
    with deadline(30):
        result = invoke("lint", config)
    assert_known(result, 1, "not regular files", "fifo.png")


@pytest.mark.parametrize("mine", ["images/keep.txt", "images/00_mine.png", "run/notes.txt"])
def test_demo_refuses_a_folder_holding_the_users_files(tmp_path, mine):
    """demo --dir wrote its images into a user's images/ (mixing them with the user's,
    then training on both) and its models beside them, and only then refused a run/ that
    was not a run, with a hint to pass --run-dir, which demo does not have."""
    (tmp_path / mine).parent.mkdir(parents=True)
    (tmp_path / mine).write_text("mine\n")
    before = hashes(tmp_path)
    result = invoke("demo", "--dir", tmp_path)
    assert_known(result, 2, "--dir")
    assert "--run-dir" not in result.output
    assert hashes(tmp_path) == before  # nothing written


def test_tag_lists_the_images_it_cannot_read(tmp_path):
    """dataset check calls a FIFO or a link loop named like an image an error; tag left
    them out without a word ("images: 1" for a folder of three)."""
    from test_tag_helpers import RED, make_tagger, solid

    folder = tmp_path / "images"
    solid(folder / "a.png", RED)
    os.mkfifo(folder / "fifo.png")
    (folder / "loop.png").symlink_to("loop.png")
    with deadline(60):
        result = invoke("tag", folder, "--model", make_tagger(tmp_path / "tagger"), "--json")
    assert_known(result, 0)
    data = json.loads(result.stdout)
    assert (data["images"], data["tagged"], data["failed"]) == (3, 1, 2)
    reasons = {Path(f["path"]).name: f["reason"] for f in data["failures"]}
    assert "FIFO" in reasons["fifo.png"] and "symbolic links" in reasons["loop.png"], reasons
    assert not (folder / "fifo.txt").exists() and not (folder / "loop.txt").exists()


def test_queue_of_a_damaged_run_folder_gives_a_fix_queue_can_take(tmp_path):
    """The manifest's message told a queue user to "pass --restart ... or another
    --run-dir", options queue does not have."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "kohyagen.json").write_text('{"format": 1, "run_dir": ')
    result = invoke("queue", run, "--json")
    assert_known(result, 1)
    reason = json.dumps(json.loads(result.stdout))
    assert "damaged" in reason or "unreadable" in reason, reason
    assert "kohyagen run" in reason and "another --run-dir" not in reason, reason


def test_train_with_a_dataset_config_that_is_a_fifo_says_so(tmp_path):
    config, _ = write_configs(tmp_path, epochs=1)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with deadline(30):
        result = invoke("train", config, "--dataset-config", fifo, "--dry-run")
    assert_known(result, 1, "not a regular file (a FIFO)")
