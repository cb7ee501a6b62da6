"""Helpers for the builtin-trainer tests: tiny datasets, configs, running in-process."""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def make_train_dir(root: Path, *, n: int = 4, repeats: int = 2, size=(64, 64)) -> Path:
    from PIL import Image

    sub = root / f"{repeats}_sks"
    sub.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, COLORS[i % len(COLORS)]).save(sub / f"{i}.png")
        (sub / f"{i}.txt").write_text(f"sks, color {i}\n")
    return root


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def write_config(tmp: Path, model: Path, *, data: Path | None = None, **overrides) -> Path:
    options = {
        "pretrained_model_name_or_path": str(model),
        "caption_extension": ".txt",
        "resolution": "64",
        "train_batch_size": 1,
        "max_train_epochs": 2,
        "save_every_n_epochs": 1,
        "network_module": "networks.lora",
        "network_dim": 4,
        "network_alpha": 2,
        "learning_rate": 1e-4,
        "optimizer_type": "AdamW",
        "mixed_precision": "no",
        "sdpa": True,
        "logging_dir": str(tmp / "logs"),
        "log_prefix": "t_",
        "output_dir": str(tmp / "output"),
        "output_name": "tl",
        "save_model_as": "safetensors",
        "seed": 42,
        "max_data_loader_n_workers": 0,
    }
    if data is not None:
        options["train_data_dir"] = str(data)
    options.update(overrides)
    options = {k: v for k, v in options.items() if v is not None}
    lines = ["[model]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in options.items()]
    path = tmp / "training_config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def reset_accelerate() -> None:
    """accelerate keeps process-wide singletons; each in-process run starts clean."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def run_trainer(argv: list[str]) -> int:
    import torch

    from kohyagen.trainer.__main__ import main

    # Tiny models on a shared 2-core machine run several times faster on one thread.
    torch.set_num_threads(1)
    reset_accelerate()
    try:
        return main(argv)
    finally:
        reset_accelerate()


def scalars(logging_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted(glob.glob(str(logging_dir / "*" / "network_train")))
    assert runs, f"no TensorBoard run under {logging_dir}"
    acc = EventAccumulator(runs[-1])
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


REFERENCE = Path(__file__).parent / "data" / "kohya_reference.json"
SAMPLES = Path(__file__).resolve().parent.parent / "facts" / "kohya" / "samples"


def key_kind(key: str) -> str:
    """`lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn1_to_q.lora_up.weight`
    -> `transformer_blocks_0_attn1_to_q`: the module kind, whatever block it sits in."""
    return re.sub(r"^.*?(attentions_\d+_|layers_\d+_)", "", key.split(".")[0])


def reference_from_samples(samples: Path) -> dict:
    """What the tests compare with, derived from kohya's real sample runs."""
    ref: dict = {}
    for run in ("run_A", "run_B"):
        md = json.loads((samples / run / "safetensors" / "harness.safetensors.json").read_text())
        tb = json.loads((samples / run / "tensorboard_scalars.json").read_text())
        keys = md["keys"]
        ref[run] = {
            "stdout": (samples / run / "stdout.log").read_text(encoding="utf-8"),
            "output_dir": f"/data/harness/runs/{run[-1]}/output",
            "metadata": md["metadata"],
            "key_kinds": sorted({key_kind(k) for k in keys} | {k.split(".", 1)[1] for k in keys}),
            "key_count": len(keys),
            "scalar_tags": next(iter(tb.values()))["tags"]["scalars"],
        }
    return ref


def load_kohya_reference(samples: Path = SAMPLES) -> dict:
    """kohya's real outputs: from facts/kohya/samples in the repository, else the derived copy in data/."""
    if samples.is_dir():
        return reference_from_samples(samples)
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def zero_unet():
    """A U-Net stand-in that predicts zeros, so a loss is exactly that of its target."""
    import torch

    class ZeroUNet(torch.nn.Module):
        def forward(self, x, t, h):
            return type("Out", (), {"sample": torch.zeros_like(x)})()

    return ZeroUNet()


def generate(pipe, prompt: str = "sks, color 1"):
    """One tiny deterministic image (64 px, 2 steps, seed 0) as a numpy array."""
    import torch

    return pipe(
        prompt,
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
