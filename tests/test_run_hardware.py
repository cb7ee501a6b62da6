"""GPU auto-detection with a fake nvidia-smi on PATH."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kohyagen.cli import main
from kohyagen.estimate.hardware import (
    CPU,
    DetectedGpu,
    detect,
    detect_preset,
    parse_nvidia_smi,
    preset_for,
)


def fake_nvidia_smi(bin_dir: Path, output: str, *, code: int = 0) -> Path:
    """A nvidia-smi that checks it was asked for CSV without units and prints `output`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "args = ' '.join(sys.argv[1:])\n"
        "assert '--query-gpu=' in args and 'noheader' in args and 'nounits' in args, args\n"
        f"sys.stdout.write({output!r})\n"
        f"sys.exit({code})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.fixture
def fake_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # no user prices or runs
    return bin_dir


def test_parse_full_and_short_forms():
    gpus = parse_nvidia_smi(
        "0, NVIDIA GeForce RTX 4090, 24564, 300, 0\n1, NVIDIA A100-SXM4-80GB, 81920, 40000, 97\n"
    )
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 4090", "NVIDIA A100-SXM4-80GB"]
    assert gpus[0].vram_gb == pytest.approx(24.0, abs=0.1)
    assert not gpus[0].busy and gpus[1].busy
    short = parse_nvidia_smi("Tesla T4, 15360\n")
    assert short[0].index == 0 and short[0].vram_gb == 15.0
    assert parse_nvidia_smi("garbage\n\n") == ()


def test_detect_with_fake_nvidia_smi(fake_path):
    fake_nvidia_smi(fake_path, "0, NVIDIA GeForce RTX 4090, 24564, 1, 0\n")
    hw = detect(use_torch=False)
    assert hw.source == "nvidia-smi" and len(hw.gpus) == 1
    preset, _ = detect_preset(hw)
    assert preset == "rtx4090"


@pytest.mark.parametrize(
    ("name", "vram", "expected"),
    [
        ("NVIDIA GeForce RTX 3090", 24, "rtx3090"),
        ("NVIDIA A100-SXM4-40GB", 40, "a100-40"),
        ("NVIDIA A100-SXM4-80GB", 80, "a100-80"),
        ("NVIDIA H100 80GB HBM3", 80, "h100"),
    ],
)
def test_name_match(name, vram, expected):
    assert preset_for(DetectedGpu(0, name, vram)) == expected


def test_unknown_card_gets_generic_preset_by_vram():
    assert preset_for(DetectedGpu(0, "NVIDIA Mystery 9000", 23.6)) == "24gb"
    assert preset_for(DetectedGpu(0, "NVIDIA Mystery 100", 11.8)) == "12gb"


def test_too_small_card_means_cpu_and_says_why():
    from kohyagen.estimate.hardware import Hardware

    hw = Hardware((DetectedGpu(0, "NVIDIA GeForce GT 1030", 2.0),), "nvidia-smi", "found")
    preset, hw2 = detect_preset(hw)
    assert preset == CPU and "less than LoRA training needs" in hw2.note


def test_broken_driver_and_missing_tool_mean_cpu(fake_path):
    fake_nvidia_smi(
        fake_path,
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
        code=9,
    )
    hw = detect(use_torch=False)
    assert not hw.has_gpu and "nvidia-smi failed" in hw.note and "CPU" in hw.note
    (fake_path / "nvidia-smi").unlink()
    hw = detect(use_torch=False)
    assert "nvidia-smi not found" in hw.note
    assert detect_preset(hw)[0] == CPU


def test_estimate_auto_uses_the_detected_gpu(fake_path):
    fake_nvidia_smi(fake_path, "0, NVIDIA GeForce RTX 3090, 24576, 0, 0\n")
    result = CliRunner().invoke(main, ["estimate", "--images", "20", "--gpu", "auto"])
    assert result.exit_code == 0, result.output
    assert "RTX 3090" in result.output and "rtx3090" in result.output


def test_estimate_auto_on_cpu_says_so(fake_path, monkeypatch):
    monkeypatch.setattr("kohyagen.estimate.hardware._from_torch", lambda: ((), "torch sees no CUDA device"))
    result = CliRunner().invoke(main, ["estimate", "--images", "20", "--gpu", "auto"])
    assert result.exit_code == 0, result.output
    assert "no NVIDIA GPU found" in result.output


def test_cuda_visible_devices_limits_what_is_detected(fake_path, monkeypatch):
    fake_nvidia_smi(
        fake_path,
        "0, NVIDIA GeForce RTX 3090, 24576, 0, 0\n1, NVIDIA GeForce RTX 4090, 24564, 0, 0\n",
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    hw = detect(use_torch=False)
    assert [g.index for g in hw.gpus] == [1]
    assert detect_preset(hw)[0] == "rtx4090"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not detect(use_torch=False).has_gpu
