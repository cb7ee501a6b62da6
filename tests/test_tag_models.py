"""Where the tagger comes from (names, hub cache, folders) and how it is run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_tag_helpers import RED, build_model, make_tagger, read_tags, solid, write_tags_csv

from kohyagen.errors import ModelNotFound, TaggingError
from kohyagen.tagging import runtime as tagging_runtime
from kohyagen.tagging.directory import tag_directory
from kohyagen.tagging.models import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    load_tags,
    resolve_model,
)
from kohyagen.tagging.runtime import (
    GPU_FIX,
    choose_providers,
    open_runtime,
    provider_warnings,
)

SHA = "0123456789abcdef0123456789abcdef01234567"


def populate_hub_cache(hub_dir: Path, repo_id: str, source: Path) -> Path:
    """Lay a tagger out as huggingface_hub's cache does (blobs + snapshot symlinks)."""
    repo_dir = hub_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    (repo_dir / "blobs").mkdir()
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(SHA)
    for name in ("model.onnx", "selected_tags.csv"):
        blob = repo_dir / "blobs" / f"blob-{name}"
        shutil.copy(source / name, blob)
        try:
            (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))
        except OSError:  # no symlinks (Windows without developer mode): plain files work too
            shutil.copy(blob, snapshot / name)
    return snapshot


@pytest.fixture
def tagger(tmp_path):
    return make_tagger(tmp_path / "tagger")


@pytest.fixture
def images(tmp_path):
    solid(tmp_path / "images" / "red.png", RED)
    return tmp_path / "images"


def test_known_names_and_default():
    assert DEFAULT_MODEL in KNOWN_MODELS and DEFAULT_MODEL.endswith("-v3")
    assert KNOWN_MODELS["wd-eva02-large-tagger-v3"] == "SmilingWolf/wd-eva02-large-tagger-v3"
    assert len(KNOWN_MODELS) == 7


def test_local_folder_and_file(tagger):
    files = resolve_model(tagger)
    assert files.model_path == tagger / "model.onnx" and files.repo_id is None
    files = resolve_model(tagger / "model.onnx")
    assert files.tags_path == tagger / "selected_tags.csv"


def test_local_folder_missing_csv(tmp_path):
    folder = tmp_path / "half"
    build_model(folder / "model.onnx")
    with pytest.raises(ModelNotFound, match=r"selected_tags\.csv is missing") as info:
        resolve_model(folder)
    assert info.value.path == folder / "selected_tags.csv"


def test_unknown_short_name():
    with pytest.raises(ModelNotFound, match="unknown tagger") as info:
        resolve_model("wd-vit-tagger-v9")
    assert "wd-vit-tagger-v3" in info.value.hint


def test_hub_repo_from_cache_offline(tmp_path, tagger, images):
    hub = tmp_path / "hub"
    snapshot = populate_hub_cache(hub, "someone/my-tagger", tagger)
    files = resolve_model("someone/my-tagger", cache_dir=hub)
    assert files.model_path.resolve() == (snapshot / "model.onnx").resolve()
    assert files.repo_id == "someone/my-tagger"
    result = tag_directory(images, model="someone/my-tagger", cache_dir=hub)
    assert result.model == "someone/my-tagger" and result.tagged == 1
    assert read_tags(images / "red.txt") == ["1girl", "solo", "long hair"]


def test_short_name_resolves_to_smilingwolf_repo_in_cache(tmp_path, tagger):
    hub = tmp_path / "hub"
    populate_hub_cache(hub, "SmilingWolf/wd-vit-tagger-v3", tagger)
    files = resolve_model("wd-vit-tagger-v3", cache_dir=hub)
    assert files.name == "wd-vit-tagger-v3"
    assert files.repo_id == "SmilingWolf/wd-vit-tagger-v3"


def test_hub_repo_not_cached_offline_is_a_clear_error(tmp_path, images):
    with pytest.raises(ModelNotFound) as info:
        tag_directory(images, model="wd-eva02-large-tagger-v3", cache_dir=tmp_path / "empty")
    text = str(info.value)
    assert "SmilingWolf/wd-eva02-large-tagger-v3" in text
    assert "HF_HUB_OFFLINE" in text and "--model" in text
    assert not (images / "red.txt").exists()


def test_cli_uses_hf_home_cache(tmp_path, tagger, images, subprocess_env):
    # A real child process: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE itself.
    populate_hub_cache(
        Path(subprocess_env["HF_HOME"]) / "hub", "SmilingWolf/wd-vit-tagger-v3", tagger
    )
    cmd = [sys.executable, "-m", "kohyagen", "tag", str(images), "--model", "wd-vit-tagger-v3"]
    proc = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert read_tags(images / "red.txt") == ["1girl", "solo", "long hair"]
    assert "tagged 1" in proc.stdout
    (images / "red.txt").unlink()
    cmd[-1] = "wd-convnext-tagger-v3"
    proc = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert "SmilingWolf/wd-convnext-tagger-v3" in proc.stderr


def test_invalid_repo_spec():
    with pytest.raises(ModelNotFound, match="valid hub repo id"):
        resolve_model("./not/here/at all")


def test_bad_tag_lists(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,tag\n1,x\n")
    with pytest.raises(TaggingError, match="name/category"):
        load_tags(bad)
    bad.write_text("tag_id,name,category,count\n1,x,general,3\n")
    with pytest.raises(TaggingError, match="line 2"):
        load_tags(bad)
    bad.write_text("tag_id,name,category,count\n")
    with pytest.raises(TaggingError, match="empty"):
        load_tags(bad)
    tags = load_tags(write_tags_csv(tmp_path / "ok.csv"))
    assert len(tags) == 12 and list(tags.indices(4)) == [10, 11]


def test_corrupt_model_file(tmp_path, images):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"\x00" * 100)
    write_tags_csv(folder / "selected_tags.csv")
    with pytest.raises(TaggingError, match="cannot load") as info:
        tag_directory(images, model=folder)
    assert info.value.path == folder / "model.onnx"


def test_model_input_read_from_the_graph(tmp_path):
    fixed = open_runtime(build_model(tmp_path / "a.onnx", size=40, batch=4))
    assert (fixed.input.size, fixed.input.layout, fixed.input.fixed_batch) == (40, "NHWC", 4)
    assert fixed.input.name == "input"
    dyn = open_runtime(build_model(tmp_path / "b.onnx", layout="NCHW", input_name="x"))
    assert (dyn.input.size, dyn.input.layout, dyn.input.fixed_batch) == (32, "NCHW", None)
    assert dyn.input.batch_shape(5) == (5, 3, 32, 32) and dyn.input.output_count == 12


def test_provider_preference():
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    available = [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(available) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["ROCMExecutionProvider", "CPUExecutionProvider"])[0] == (
        "ROCMExecutionProvider"
    )
    assert choose_providers(["CoreMLExecutionProvider", "CPUExecutionProvider"])[0] == (
        "CoreMLExecutionProvider"
    )
    assert choose_providers(available, ["cpu"]) == ["CPUExecutionProvider"]
    with pytest.raises(TaggingError, match="no ROCMExecutionProvider"):
        choose_providers(available, ["rocm"])


def test_warning_when_nvidia_gpu_but_cpu_onnxruntime(monkeypatch):
    monkeypatch.setattr(tagging_runtime, "nvidia_gpu_present", lambda: True)
    (warning,) = provider_warnings(["AzureExecutionProvider", "CPUExecutionProvider"])
    assert "NVIDIA GPU" in warning and GPU_FIX in warning
    assert "pip uninstall -y onnxruntime && pip install onnxruntime-gpu" in warning
    assert provider_warnings(["CUDAExecutionProvider", "CPUExecutionProvider"]) == []
    monkeypatch.setattr(tagging_runtime, "nvidia_gpu_present", lambda: False)
    assert provider_warnings(["CPUExecutionProvider"]) == []


def test_gpu_warning_reaches_the_result(monkeypatch, tagger, images):
    monkeypatch.setattr(tagging_runtime, "nvidia_gpu_present", lambda: True)
    messages = []
    result = tag_directory(images, model=tagger, on_message=messages.append)
    assert any(GPU_FIX in w for w in result.warnings)
    assert messages[0].startswith("tagger ") and "on CPU" in messages[0]
    assert any(GPU_FIX in m for m in messages[1:])
