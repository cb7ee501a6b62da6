"""kohyagen demo: the generated dataset, and the whole pipeline offline on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kohyagen.demo import TRIGGER, make_demo_dataset


def test_demo_dataset_has_matching_captions(tmp_path):
    from PIL import Image

    images = make_demo_dataset(tmp_path, count=6)
    assert len(images) == 6
    for image in images:
        caption = image.with_suffix(".txt").read_text()
        color, shape = image.stem.split("_")[1:]
        assert caption.startswith(f"{TRIGGER}, {color} {shape}")
        with Image.open(image) as im:
            assert im.size[0] >= 64 and im.mode == "RGB"
    # the shapes really differ: not every image is the same picture
    assert len({Image.open(p).tobytes() for p in images}) == 6
    # a second call keeps what is there
    before = images[0].stat().st_mtime_ns
    make_demo_dataset(tmp_path, count=6)
    assert images[0].stat().st_mtime_ns == before


@pytest.mark.slow
@pytest.mark.train
def test_demo_runs_every_stage_offline(tmp_path, subprocess_env):
    for module in ("kohyagen.launch", "kohyagen.tiny", "kohyagen.trainer", "torch", "diffusers"):
        pytest.importorskip(module)
    env = dict(subprocess_env)
    env["PATH"] = f"{tmp_path / 'bin'}:/usr/bin:/bin"  # no nvidia-smi: a CPU machine
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    proc = subprocess.run(
        [sys.executable, "-m", "kohyagen", "demo", "--dir", str(tmp_path / "demo"), "--epochs", "1",
         "--json"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert [s["status"] for s in data["stages"]] == [
        "done", "done", "skipped", "done", "done", "done", "done", "done"
    ]  # fmt: skip
    assert data["lora"].endswith(".safetensors")
    run_dir = tmp_path / "demo" / "run"
    assert (run_dir / "summary.json").is_file() and (run_dir / "loss.png").is_file()
    for stage in ("[check]", "[prepare]", "[tag] skipped", "[estimate]", "[train]", "[pick]"):
        assert stage in proc.stderr
