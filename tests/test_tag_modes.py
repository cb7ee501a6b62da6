"""Caption policy, atomic writes and resuming, failures, folders and batching."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from test_tag_helpers import BLUE, CYAN, GREEN, RED, make_tagger, read_tags, solid

from kohyagen.errors import DatasetError, TaggingError, UsageError
from kohyagen.tagging.captions import TEMP_SUFFIX
from kohyagen.tagging.directory import tag_directory


@pytest.fixture
def tagger(tmp_path):
    return make_tagger(tmp_path / "tagger")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    for name, color in (("a_red", RED), ("b_green", GREEN), ("c_blue", BLUE), ("d_cyan", CYAN)):
        solid(folder / f"{name}.png", color)
    return folder


def test_skip_keeps_existing_captions_byte_for_byte(images, tagger):
    mine = images / "a_red.txt"
    mine.write_bytes(b"my own caption\r\nsecond line")
    result = tag_directory(images, model=tagger)
    assert (result.tagged, result.skipped, result.failed) == (3, 1, 0)
    assert mine.read_bytes() == b"my own caption\r\nsecond line"
    assert read_tags(images / "b_green.txt") == ["^_^"]


def test_blank_caption_counts_as_missing(images, tagger):
    (images / "a_red.txt").write_text("  \n")
    result = tag_directory(images, model=tagger)
    assert result.tagged == 4
    assert read_tags(images / "a_red.txt") == ["1girl", "solo", "long hair"]


def test_append_merges_without_duplicates(images, tagger):
    (images / "a_red.txt").write_text("my style, Long_Hair\n")
    result = tag_directory(images, model=tagger, mode="append", trigger="sks")
    assert result.tagged == 4
    assert read_tags(images / "a_red.txt") == ["sks", "my style", "Long_Hair", "1girl", "solo"]
    assert read_tags(images / "b_green.txt") == ["sks", "^_^"]
    # Appending again changes nothing.
    before = (images / "a_red.txt").read_text()
    tag_directory(images, model=tagger, mode="append", trigger="sks")
    assert (images / "a_red.txt").read_text() == before


def test_overwrite_replaces(images, tagger):
    (images / "a_red.txt").write_text("old caption\n")
    result = tag_directory(images, model=tagger, mode="overwrite")
    assert result.tagged == 4 and result.skipped == 0
    assert (images / "a_red.txt").read_text() == "1girl, solo, long hair\n"


def test_nothing_to_do_loads_no_model(images, tagger):
    tag_directory(images, model=tagger)
    # The model is not even looked up when every image has a caption.
    result = tag_directory(images, model="no/such-model-anywhere")
    assert (result.tagged, result.skipped, result.provider) == (0, 4, None)


def test_summary_counts_and_progress(images, tagger):
    calls = []
    result = tag_directory(
        images,
        model=tagger,
        batch_size=3,
        trigger="sks",
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(0, 4), (3, 4), (4, 4)]
    assert result.tag_counts["blue sky"] == 2 and result.tag_counts["kirisame marisa"] == 2
    assert "sks" not in result.tag_counts
    counts = list(result.tag_counts.values())
    assert counts == sorted(counts, reverse=True)
    assert result.provider == "CPU" and result.batch_size == 3 and result.input_size == 32
    data = result.to_dict()
    assert data["tagged"] == 4 and data["root"] == str(images)


def test_interrupted_write_leaves_old_or_new_and_resume_finishes(images, tagger, monkeypatch):
    (images / "c_blue.txt").write_text("old caption\n")
    real_replace = os.replace
    calls = {"n": 0}

    def flaky_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-run
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(KeyboardInterrupt):
        tag_directory(images, model=tagger, mode="overwrite", batch_size=1)
    monkeypatch.setattr(os, "replace", real_replace)
    assert read_tags(images / "a_red.txt") == ["1girl", "solo", "long hair"]
    assert not (images / "b_green.txt").exists()
    assert (images / "c_blue.txt").read_text() == "old caption\n"
    assert not list(images.glob(f"*{TEMP_SUFFIX}"))
    result = tag_directory(images, model=tagger)
    assert (result.tagged, result.skipped) == (2, 2)  # b and d; a and c kept
    assert (images / "c_blue.txt").read_text() == "old caption\n"


def test_killed_process_leaves_whole_captions_and_next_run_carries_on(
    tmp_path, images, tagger, subprocess_env
):
    for i in range(8):
        solid(images / f"e{i}.png", RED)
    stale = images / f".e7.txt.99999{TEMP_SUFFIX}"
    stale.write_text("half writ")
    script = textwrap.dedent(
        f"""
        import os, signal
        from kohyagen.tagging.directory import tag_directory
        def progress(done, total):
            if done >= 5:
                os.kill(os.getpid(), signal.SIGKILL)
        tag_directory({str(images)!r}, model={str(tagger)!r}, batch_size=1, progress=progress)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env=subprocess_env, check=False)
    assert proc.returncode == -signal.SIGKILL
    captions = sorted(images.glob("*.txt"))
    assert 5 <= len(captions) < 12
    for caption in captions:
        assert caption.read_text().endswith("\n") and read_tags(caption)[0]
    result = tag_directory(images, model=tagger)
    assert result.tagged == 12 - len(captions) and result.skipped == len(captions)
    assert len(list(images.glob("*.txt"))) == 12
    assert not stale.exists()


def test_unreadable_images_reported_not_fatal(images, tagger):
    (images / "broken.png").write_bytes(b"not a png at all")
    (images / "empty.jpg").write_bytes(b"")
    result = tag_directory(images, model=tagger, batch_size=2)
    assert (result.tagged, result.failed) == (4, 2)
    assert {f.path.name for f in result.failures} == {"broken.png", "empty.jpg"}
    assert all("cannot read image" in f.reason for f in result.failures)
    assert not (images / "broken.txt").exists()
    # The good images in a batch with a broken one still get their own tags.
    assert read_tags(images / "b_green.txt") == ["^_^"]


def test_all_images_unreadable(tmp_path, tagger):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"junk")
    result = tag_directory(folder, model=tagger)
    assert (result.tagged, result.failed) == (0, 1)


def test_truncated_image_is_a_failure(images, tagger):
    data = (images / "a_red.png").read_bytes()
    (images / "cut.png").write_bytes(data[: len(data) // 2])
    result = tag_directory(images, model=tagger)
    assert [f.path.name for f in result.failures] == ["cut.png"]


def test_recursive(tmp_path, tagger):
    root = tmp_path / "train"
    solid(root / "10_sks" / "a.png", RED)
    solid(root / "10_sks" / "deeper" / "b.png", GREEN)
    solid(root / ".cache" / "c.png", BLUE)
    # without --recursive a train dir's N_name/ folders are tagged, not deeper (issue 15)
    assert tag_directory(root, model=tagger).tagged == 1
    assert not (root / "10_sks" / "deeper" / "b.txt").exists()
    result = tag_directory(root, model=tagger, recursive=True)
    assert result.tagged == 1 and result.skipped == 1
    assert read_tags(root / "10_sks" / "deeper" / "b.txt") == ["^_^"]
    assert not (root / ".cache" / "c.txt").exists()


def test_not_recursive_by_default(tmp_path, tagger):
    solid(tmp_path / "top" / "a.png", RED)
    solid(tmp_path / "top" / "sub" / "b.png", RED)
    assert tag_directory(tmp_path / "top", model=tagger).tagged == 1
    assert not (tmp_path / "top" / "sub" / "b.txt").exists()


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_fixed_batch_model(tmp_path, count):
    tagger = make_tagger(tmp_path / "fixed", batch=2)
    folder = tmp_path / "imgs"
    colors = [RED, GREEN, BLUE, CYAN, RED]
    for i in range(count):
        solid(folder / f"{i}.png", colors[i])
    result = tag_directory(folder, model=tagger, batch_size=8)
    assert result.batch_size == 2 and result.tagged == count
    assert any("batches of 2" in w for w in result.warnings)
    assert read_tags(folder / "0.txt") == ["1girl", "solo", "long hair"]
    if count >= 3:
        assert read_tags(folder / "2.txt") == ["kirisame marisa", "blue sky"]


def test_fixed_batch_with_a_broken_image(tmp_path):
    tagger = make_tagger(tmp_path / "fixed", batch=2)
    folder = tmp_path / "imgs"
    solid(folder / "a.png", RED)
    (folder / "b.png").write_bytes(b"junk")
    solid(folder / "c.png", GREEN)
    result = tag_directory(folder, model=tagger)
    assert (result.tagged, result.failed) == (2, 1)
    assert read_tags(folder / "c.txt") == ["^_^"]


def test_nchw_model_and_other_input_size(tmp_path):
    tagger = make_tagger(tmp_path / "nchw", layout="NCHW", size=48, input_name="pixel_values")
    folder = tmp_path / "imgs"
    solid(folder / "r.png", RED, size=(100, 60))
    solid(folder / "b.png", BLUE)
    result = tag_directory(folder, model=tagger)
    assert result.input_size == 48
    assert read_tags(folder / "b.txt") == ["kirisame marisa", "blue sky"]
    assert read_tags(folder / "r.txt")[:3] == ["1girl", "solo", "long hair"]


def test_caption_extension(images, tagger):
    result = tag_directory(images, model=tagger, caption_ext="caption")
    assert result.caption_extension == ".caption"
    assert read_tags(images / "b_green.caption") == ["^_^"]
    assert not list(images.glob("*.txt"))
    with pytest.raises(UsageError):
        tag_directory(images, model=tagger, caption_ext=".png")


def test_same_stem_images_share_one_caption(tmp_path, tagger):
    folder = tmp_path / "imgs"
    solid(folder / "a.png", RED)
    solid(folder / "a.webp", GREEN)
    result = tag_directory(folder, model=tagger)
    assert result.tagged == 1 and result.skipped == 1
    assert read_tags(folder / "a.txt") == ["1girl", "solo", "long hair"]
    assert any("a.webp shares a.txt" in w for w in result.warnings)


def test_bad_arguments(tmp_path, images, tagger):
    with pytest.raises(DatasetError, match="not found"):
        tag_directory(tmp_path / "nope", model=tagger)
    with pytest.raises(DatasetError, match="no images"):
        tag_directory(tagger, model=tagger)
    with pytest.raises(UsageError, match="mode"):
        tag_directory(images, model=tagger, mode="replace")
    with pytest.raises(UsageError, match="threshold"):
        tag_directory(images, model=tagger, threshold=float("nan"))
    with pytest.raises(UsageError, match="batch size"):
        tag_directory(images, model=tagger, batch_size=0)


def test_model_and_tag_list_mismatch(tmp_path, images):
    tagger = make_tagger(tmp_path / "odd", output_count=7)
    with pytest.raises(TaggingError, match="7 scores but its tag list has 12 rows"):
        tag_directory(images, model=tagger)
    assert not list(images.glob("*.txt"))


def test_accelerator_pipeline_loads_next_batches_during_inference(tmp_path, monkeypatch):
    """Off the CPU, batch k+1 is being loaded while batch k runs."""
    import threading

    from kohyagen.tagging import directory as tagging
    from kohyagen.tagging import loop as tagging_run
    from kohyagen.tagging import runtime as tagging_runtime

    tagger = make_tagger(tmp_path / "tagger")
    folder = tmp_path / "imgs"
    for i in range(6):
        solid(folder / f"{i}.png", [RED, GREEN, BLUE][i % 3])
    loaded_later_batch = threading.Event()
    real_prepare = tagging_run.prepare_into

    def prepare(batch, row, path, size, layout):
        if int(path.stem) >= 2:
            loaded_later_batch.set()
        return real_prepare(batch, row, path, size, layout)

    overlapped = []
    real_run = tagging_runtime.Runtime.run

    def run(self, batch):
        if not overlapped:
            overlapped.append(loaded_later_batch.wait(timeout=10))
        return real_run(self, batch)

    real_open = tagging.open_runtime

    def open_as_gpu(*args, **kwargs):
        runtime = real_open(*args, **kwargs)
        runtime.provider = "CUDA"  # what matters here is only the pipeline depth
        return runtime

    monkeypatch.setattr(tagging_run, "prepare_into", prepare)
    monkeypatch.setattr(tagging_runtime.Runtime, "run", run)
    monkeypatch.setattr(tagging, "open_runtime", open_as_gpu)
    result = tag_directory(folder, model=tagger, batch_size=2)
    assert overlapped == [True]
    assert result.tagged == 6 and result.provider == "CUDA"
    assert read_tags(folder / "5.txt") == ["kirisame marisa", "blue sky"]


def test_cpu_loads_between_runs(tmp_path, monkeypatch):
    """On the CPU the next batch is loaded after the current run, not during it."""
    from kohyagen.tagging import loop as tagging_run
    from kohyagen.tagging import runtime as tagging_runtime

    tagger = make_tagger(tmp_path / "tagger")
    folder = tmp_path / "imgs"
    for i in range(4):
        solid(folder / f"{i}.png", RED)
    events = []
    real_prepare = tagging_run.prepare_into
    real_run = tagging_runtime.Runtime.run

    def prepare(batch, row, path, size, layout):
        events.append(f"load{path.stem}")
        return real_prepare(batch, row, path, size, layout)

    def run(self, batch):
        events.append("run")
        return real_run(self, batch)

    monkeypatch.setattr(tagging_run, "prepare_into", prepare)
    monkeypatch.setattr(tagging_runtime.Runtime, "run", run)
    tag_directory(folder, model=tagger, batch_size=2, workers=1)
    assert events == ["load0", "load1", "run", "load2", "load3", "run"]


def test_append_leaves_a_non_utf8_caption_alone(images, tagger):
    (images / "a_red.txt").write_bytes(b"caf\xe9, latin-1\n")
    result = tag_directory(images, model=tagger, mode="append")
    assert result.tagged == 3 and result.failed == 1
    assert "not UTF-8" in result.failures[0].reason
    assert (images / "a_red.txt").read_bytes() == b"caf\xe9, latin-1\n"


def test_unwritable_caption_is_a_failure_not_a_crash(images, tagger):
    (images / "b_green.txt").mkdir()  # a folder where the caption should go
    result = tag_directory(images, model=tagger, mode="overwrite")
    assert result.tagged == 3
    assert [f.path.name for f in result.failures] == ["b_green.png"]
    # refused before the model ran: a folder is not a caption to read or replace
    assert "b_green.txt is not a regular file" in result.failures[0].reason
