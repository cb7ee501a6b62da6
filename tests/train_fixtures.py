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
    for path in FAKE.glob("*train_network.py"):  # train_network, sdxl and the DiT families
        shutil.copy(path, checkout / path.name)
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


def kohya_log(
    losses: list[float],
    *,
    out_dir: Path,
    name: str = "mylora",
    steps_per_epoch: int = 4,
    val: list[float] | None = None,
    finished: bool = True,
) -> str:
    """A combined kohya log (stdout + stderr as they interleave) for planted epoch losses:
    each epoch's steps all have that epoch's loss, so avr_loss at its end equals it."""
    total = len(losses) * steps_per_epoch
    out = [
        "accelerator device: cuda\n",
        f"  num epochs / epoch数: {len(losses)}\n",
        f"  total optimization steps / 学習ステップ数: {total}\n",
        f"\rsteps:   0%|          | 0/{total} [00:00<?, ?it/s]\n",
    ]
    step = 0
    for epoch, loss in enumerate(losses, start=1):
        out.append(f"epoch {epoch}/{len(losses)}\n\n")
        for _ in range(steps_per_epoch):
            step += 1
            pct = 100 * step // total
            out.append(
                f"\rsteps: {pct:3d}%|██        | {step}/{total} [00:{step:02d}<00:10,  1.00s/it, avr_loss={loss:.3g}]"
            )
            out.append(
                f"\rsteps: {pct:3d}%|██        | {step}/{total} [00:{step:02d}<00:10,  1.00s/it, avr_loss={loss:.3g}]"
            )
        if val:
            out.append(
                f"\n\repoch validation steps: 100%|██████████| 4/4 [00:03<00:00,  1.15it/s, "
                f"val_epoch_avg_loss={val[epoch - 1]:.3g}, timestep=800]\x1b[A"
            )
        if epoch < len(losses):
            out.append(f"\nsaving checkpoint: {out_dir / f'{name}-{epoch:06d}.safetensors'}\n\n")
        elif finished:
            out.append(f"\nsaving checkpoint: {out_dir / f'{name}.safetensors'}\n")
            out.append(
                "2026-11-29 11:04:24 INFO     model saved.                  train_network.py:1729\n"
            )
    return "".join(out)


def write_checkpoint(
    path: Path, *, epoch: int | None = None, step: int | None = None, size: int = 64
) -> Path:
    """A minimal .safetensors file with kohya's ss_epoch / ss_steps metadata."""
    import json
    import struct

    meta = {}
    if epoch is not None:
        meta["ss_epoch"] = str(epoch)
    if step is not None:
        meta["ss_steps"] = str(step)
    header = json.dumps(
        {"__metadata__": meta, "w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}
    ).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * size)
    return path


def make_run(
    root: Path,
    losses: list[float],
    *,
    name: str = "mylora",
    val: list[float] | None = None,
    steps_per_epoch: int = 4,
    finished: bool = True,
) -> Path:
    """A run folder as `kohyagen train` leaves it, from a planted loss curve (no events)."""
    run = root / "runs" / name
    out = root / "out" / "output"
    run.mkdir(parents=True)
    (run / "training_config.toml").write_text(
        f'output_dir = "{out}"\noutput_name = "{name}"\nmax_train_epochs = {len(losses)}\n'
    )
    (run / "train.log").write_text(
        kohya_log(
            losses,
            out_dir=out,
            name=name,
            steps_per_epoch=steps_per_epoch,
            val=val,
            finished=finished,
        ),
        encoding="utf-8",
    )
    last = len(losses) if finished else len(losses) - 1
    for epoch in range(1, last + 1):
        file = f"{name}.safetensors" if epoch == len(losses) else f"{name}-{epoch:06d}.safetensors"
        write_checkpoint(out / file, epoch=epoch, step=epoch * steps_per_epoch)
    return run
