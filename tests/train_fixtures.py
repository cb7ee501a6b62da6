"""Helpers for the train tests: a fake sd-scripts checkout and configs that lint clean."""

from __future__ import annotations

import shutil
import stat
import sys
from pathlib import Path

FAKE = Path(__file__).resolve().parent / "fake_sd_scripts"


def make_checkout(root: Path, *, venv: bool = True) -> Path:
    """A fake sd-scripts checkout; with venv, venv/bin/python runs this interpreter with a
    stand-in accelerate on its path (so no real accelerate/torch import per attempt)."""
    checkout = root / "sd-scripts"
    checkout.mkdir(parents=True)
    for name in ("train_network.py", "sdxl_train_network.py"):
        shutil.copy(FAKE / name, checkout / name)
    if venv:
        shutil.copytree(FAKE / "fake_site", checkout / "fake_site")
        python = checkout / "venv" / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.write_text(
            "#!/bin/sh\n"
            f'PYTHONPATH="{checkout / "fake_site"}${{PYTHONPATH:+:$PYTHONPATH}}" '
            f'exec "{sys.executable}" "$@"\n'
        )
        python.chmod(python.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return checkout


def write_configs(
    root: Path,
    *,
    name: str = "mylora",
    batch_size: int = 4,
    epochs: int = 5,
    dataset: bool = True,
    sdxl: bool = False,
    logging: bool = True,
    extra: str = "",
) -> tuple[Path, Path | None]:
    """A training config (+ dataset config) like the ones kohyagen renders."""
    data = root / "data" / "10_sks"
    data.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.new("RGB", (64, 64), (120, 30, 200)).save(data / "a.png")
    (data / "a.txt").write_text("sks, photo\n")
    out = root / "out"
    script = "sdxl_train_network.py" if sdxl else "train_network.py"
    lines = [
        f"# kohyagen-script: {script}",
        f'pretrained_model_name_or_path = "{root / "model.safetensors"}"',
        'network_module = "networks.lora"',
        "network_dim = 4",
        "network_alpha = 2",
        'resolution = "1024"' if sdxl else 'resolution = "512"',
        f"max_train_epochs = {epochs}",
        "save_every_n_epochs = 1",
        f'output_dir = "{out / "output"}"',
        f'output_name = "{name}"',
        'save_model_as = "safetensors"',
        'mixed_precision = "no"',
        "learning_rate = 1e-4",
        'optimizer_type = "AdamW"',
    ]
    if logging:
        lines.append(f'logging_dir = "{out / "logs"}"')
    (root / "model.safetensors").write_bytes(b"\0" * 16)
    dataset_path = None
    if dataset:
        dataset_path = root / "dataset_config.toml"
        dataset_path.write_text(
            "[general]\n"
            'caption_extension = ".txt"\n\n'
            "[[datasets]]\n"
            f"resolution = {1024 if sdxl else 512}\n"
            f"batch_size = {batch_size}\n\n"
            "  [[datasets.subsets]]\n"
            f'  image_dir = "{data}"\n'
            "  num_repeats = 10\n"
        )
        lines.append(f'dataset_config = "{dataset_path}"')
    else:
        lines.append(f"train_batch_size = {batch_size}")
        lines.append('caption_extension = ".txt"')
        lines.append(f'train_data_dir = "{data.parent}"')
    config = root / "training_config.toml"
    config.write_text("\n".join(lines) + "\n" + extra)
    return config, dataset_path


def fake_env(**values: object) -> dict[str, str]:
    return {f"FAKE_KOHYA_{k.upper()}": str(v) for k, v in values.items()}
