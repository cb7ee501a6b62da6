"""End-to-end runs of the builtin trainer on tiny random pipelines (CPU, 64 px)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from tests.trainer_helpers import (
    generate,
    key_kind,
    load_kohya_reference,
    make_train_dir,
    run_trainer,
    scalars,
    write_config,
)

STEPS_RE = re.compile(
    r"steps:\s+(\d+)%\|.*?\|\s*(\d+)/(\d+) \[([^<]+)<([^,]+),\s*([\d.]+)(s/it|it/s)(?:, (.*?))?\]"
)
KEY_RE = re.compile(
    r"^lora_(te|te1|te2|unet)_[a-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$"
)


@pytest.fixture(scope="module")
def kohya_ref() -> dict:
    return load_kohya_reference()


@pytest.fixture(scope="module")
def sd15(tmp_path_factory) -> Path:
    from kohyagen.run.tiny import make_tiny_pipeline

    return make_tiny_pipeline(tmp_path_factory.mktemp("models") / "sd15", "sd15")


@pytest.fixture(scope="module")
def sd15_run(tmp_path_factory, sd15):
    """One 2-epoch run shaped like the kohya sample run_A (4 images x 2 repeats)."""
    tmp = tmp_path_factory.mktemp("run_a")
    data = make_train_dir(tmp / "data")
    config = write_config(tmp, sd15, data=data, save_state=True)
    capture = pytest.MonkeyPatch()
    import io
    import sys

    out, err = io.StringIO(), io.StringIO()
    capture.setattr(sys, "stdout", out)
    capture.setattr(sys, "stderr", err)
    try:
        rc = run_trainer(["--config_file", str(config)])
    finally:
        capture.undo()
    return {
        "tmp": tmp,
        "rc": rc,
        "stdout": out.getvalue(),
        "stderr": err.getvalue(),
        "config": config,
    }


def _metadata(path: Path) -> tuple[dict[str, str], list[str]]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata()), sorted(f.keys())


def test_stdout_matches_kohya_sample(sd15_run, kohya_ref):
    assert sd15_run["rc"] == 0, sd15_run["stderr"][-2000:]
    ref = kohya_ref["run_A"]["stdout"]
    out_dir = sd15_run["tmp"] / "output"
    ref = ref.replace(kohya_ref["run_A"]["output_dir"] + "/harness", f"{out_dir}/tl")
    assert sd15_run["stdout"] == ref


def test_stderr_has_tqdm_steps_bar_and_logs(sd15_run):
    err = sd15_run["stderr"]
    bars = [m for m in STEPS_RE.finditer(err.replace("\r", "\n"))]
    assert bars, err[-2000:]
    last = bars[-1]
    assert (last.group(2), last.group(3)) == ("16", "16")
    assert re.match(r"avr_loss=[\d.]+", last.group(8))
    assert "epoch is incremented. current_epoch: 1, epoch: 2" in err
    assert "saving state at epoch 1" in err and "saving last state." in err
    assert err.rstrip().endswith("model saved.")


def test_checkpoint_files_keys_and_metadata(sd15_run, kohya_ref):
    out = sd15_run["tmp"] / "output"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["tl-000001-state", "tl-000001.safetensors", "tl-state", "tl.safetensors"]
    md, keys = _metadata(out / "tl.safetensors")
    ref = kohya_ref["run_A"]
    assert set(md) == set(ref["metadata"])
    for key in (
        "ss_network_module",
        "ss_network_dim",
        "ss_network_alpha",
        "ss_num_epochs",
        "ss_max_train_steps",
        "ss_num_train_images",
        "ss_resolution",
        "ss_optimizer",
        "ss_base_model_version",
        "ss_lr_scheduler",
        "ss_mixed_precision",
        "ss_dataset_dirs",
        "modelspec.architecture",
        "modelspec.prediction_type",
        "modelspec.resolution",
    ):
        assert md[key] == ref["metadata"][key], key
    assert md["ss_epoch"] == "2" and md["ss_steps"] == "16"
    md1, _ = _metadata(out / "tl-000001.safetensors")
    assert md1["ss_epoch"] == "1" and md1["ss_steps"] == "8"
    assert all(KEY_RE.match(k) for k in keys)

    # The same module kinds as kohya's SD1 network, by name suffix.
    assert (
        sorted({key_kind(k) for k in keys} | {k.split(".", 1)[1] for k in keys}) == ref["key_kinds"]
    )
    assert {k for k in keys if k.startswith("lora_te_")} and {
        k for k in keys if k.startswith("lora_unet_")
    }
    assert len(md["sshs_model_hash"]) == 64 and len(md["sshs_legacy_hash"]) == 8
    state = json.loads((out / "tl-000001-state" / "train_state.json").read_text())
    assert state == {"current_epoch": 1, "current_step": 8}


def test_tensorboard_tags_as_kohya(sd15_run, kohya_ref):
    logs = sd15_run["tmp"] / "logs"
    run_dirs = list(logs.iterdir())
    assert len(run_dirs) == 1 and re.fullmatch(r"t_\d{14}", run_dirs[0].name)
    tags = scalars(logs)
    assert set(tags) == set(kohya_ref["run_A"]["scalar_tags"])
    assert [s for s, _ in tags["loss/current"]] == list(range(1, 17))
    assert [s for s, _ in tags["loss/epoch_average"]] == [1, 2]


def test_lora_loads_in_diffusers_and_changes_output(sd15_run, sd15):
    import diffusers

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(sd15)

    def image():
        return generate(pipe)

    before = image()
    pipe.load_lora_weights(str(sd15_run["tmp"] / "output" / "tl.safetensors"))
    assert abs(image() - before).max() > 1e-4
    te_lora = [n for n, _ in pipe.text_encoder.named_modules() if n.endswith("lora_A")]
    unet_lora = [n for n, _ in pipe.unet.named_modules() if n.endswith("lora_A")]
    _, keys = _metadata(sd15_run["tmp"] / "output" / "tl.safetensors")
    assert te_lora and len(te_lora) + len(unet_lora) == len(keys) // 3


def test_resume_continues_from_saved_state(sd15_run, tmp_path, capsys):
    from safetensors.torch import load_file

    first = sd15_run["tmp"]
    config = first / "training_config.toml"
    text = config.read_text().replace(str(first / "output"), str(tmp_path / "output"))
    text = text.replace(str(first / "logs"), str(tmp_path / "logs"))
    resumed_config = tmp_path / "training_config.toml"
    resumed_config.write_text(text)
    rc = run_trainer(
        [
            "--config_file",
            str(resumed_config),
            "--resume",
            str(first / "output" / "tl-000001-state"),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    assert "epoch 1/2" not in captured.out and "epoch 2/2" in captured.out
    assert "saving checkpoint: " + str(tmp_path / "output" / "tl.safetensors") in captured.out
    assert [s for s, _ in scalars(tmp_path / "logs")["loss/current"]] == list(range(9, 17))
    full = load_file(first / "output" / "tl.safetensors")
    resumed = load_file(tmp_path / "output" / "tl.safetensors")
    epoch1 = load_file(first / "output" / "tl-000001.safetensors")
    key = next(k for k in full if k.endswith("lora_up.weight") and "unet" in k)
    assert not resumed[key].equal(epoch1[key])  # it trained on from the state
    assert all(resumed[k].allclose(full[k], atol=1e-5) for k in full)  # exactly as uninterrupted


def test_unsupported_options_are_refused(tmp_path, sd15, capsys):
    data = make_train_dir(tmp_path / "data", n=1)
    config = write_config(
        tmp_path,
        sd15,
        data=data,
        weighted_captions=True,
        network_args=["block_dims=2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2"],
        optimizer_type="DAdaptation",
    )
    rc = run_trainer(["--config_file", str(config)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "weighted_captions = True" in err and "block_dims" in err and "DAdaptation" in err
    assert "kohya backend" in err
    assert not (tmp_path / "output").exists()


def test_augmentations_loraplus_and_dropouts_train(tmp_path, sd15, capsys):
    from PIL import Image

    data = make_train_dir(tmp_path / "data", n=2, repeats=1, size=(96, 80))
    Image.new("RGB", (120, 100), (20, 200, 20)).save(data / "1_sks" / "me_60_50_30_30.png")
    Image.new("RGBA", (96, 80), (200, 20, 20, 60)).save(data / "1_sks" / "clear.png")
    config = write_config(
        tmp_path,
        sd15,
        data=data,
        random_crop=True,
        color_aug=True,
        max_train_epochs=1,
        noise_offset=0.05,
        adaptive_noise_scale=0.01,
        network_args=["loraplus_unet_lr_ratio=16", "rank_dropout=0.1", "module_dropout=0.1"],
        mixed_precision="fp16",  # falls back to fp32 on the CPU
        full_fp16=True,
        face_crop_aug_range="2.0,4.0",
        scale_weight_norms=1.0,
        v_pred_like_loss=0.1,
        alpha_mask=True,
        masked_loss=True,
        console_log_file=str(tmp_path / "console.txt"),
    )
    rc = run_trainer(["--config_file", str(config)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    md, _ = _metadata(tmp_path / "output" / "tl.safetensors")
    assert md["ss_random_crop"] == "True" and md["ss_color_aug"] == "True"
    assert md["ss_adaptive_noise_scale"] == "0.01" and md["ss_full_fp16"] == "True"
    assert md["ss_face_crop_aug_range"] == "(2.0, 4.0)" and md["ss_scale_weight_norms"] == "1.0"
    assert json.loads(md["ss_network_args"])["loraplus_unet_lr_ratio"] == "16"
    tags = scalars(tmp_path / "logs")
    assert tags["lr/unet plus"][0][1] == pytest.approx(16e-4)
    assert tags["lr/unet"][0][1] == pytest.approx(1e-4) and "lr/textencoder plus" not in tags
    assert {"max_norm/keys_scaled", "max_norm/max_key_norm", "norm/avg_key_norm"} <= set(tags)
    assert "Keys Scaled=" in captured.err  # kohya's bar postfix
    logged = (tmp_path / "console.txt").read_text()
    assert "epoch is incremented" in logged and "epoch is incremented" not in captured.err


def make_reg_dir(root: Path) -> Path:
    from PIL import Image

    sub = root / "1_dog"
    sub.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (64, 64), (90, 90, 90 + 40 * i)).save(sub / f"r{i}.png")
    return root


def test_many_options_together(tmp_path, sd15, capsys):
    """bf16, checkpointing, accumulation, buckets, disk cache, flips, caption ops, step saves."""
    from PIL import Image

    sub = tmp_path / "data" / "2_sks"
    sub.mkdir(parents=True)
    for i, size in enumerate([(64, 64), (128, 64), (64, 128), (96, 80)]):
        Image.new("RGB", size, (200, 40 * i, 30)).save(sub / f"{i}.png")
        (sub / f"{i}.txt").write_text(f"sks, tag{i}, red, square\n")
    config = write_config(
        tmp_path,
        sd15,
        data=tmp_path / "data",
        resolution="64,64",
        mixed_precision="bf16",
        full_bf16=True,
        gradient_checkpointing=True,
        gradient_accumulation_steps=2,
        train_batch_size=2,
        enable_bucket=True,
        min_bucket_reso=32,
        max_bucket_reso=128,
        bucket_reso_steps=32,
        flip_aug=True,
        shuffle_caption=True,
        keep_tokens=1,
        caption_tag_dropout_rate=0.2,
        cache_latents_to_disk=True,
        save_every_n_steps=3,
        optimizer_type="AdamW8bit",
        lr_scheduler="cosine_with_restarts",
        lr_scheduler_num_cycles=2,
        lr_warmup_steps=0.25,
        text_encoder_lr=5e-5,
        unet_lr=2e-4,
        reg_data_dir=str(make_reg_dir(tmp_path / "reg")),
        network_dropout=0.1,
        multires_noise_iterations=4,
        max_token_length=150,
        prior_loss_weight=0.5,
        alpha_mask=True,  # opaque images: all-ones masks, cached beside the latents
        loss_type="smooth_l1",
        huber_schedule="exponential",
        huber_c=0.2,
    )
    rc = run_trainer(["--config_file", str(config)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    assert "  num reg images / 正則化画像の数: 2" in captured.out
    # 8 training samples + 8 reg samples (2 reg images looped), batches of 2 per bucket
    assert "  num train images * repeats / 学習画像の数×繰り返し回数: 8" in captured.out
    out = tmp_path / "output"
    names = sorted(p.name for p in out.iterdir())
    assert {"tl-000001.safetensors", "tl-step00000003.safetensors", "tl.safetensors"} <= set(names)
    steps = [int(n[7:15]) for n in names if n.startswith("tl-step")]
    assert steps and all(s % 3 == 0 for s in steps)
    md, _ = _metadata(out / "tl.safetensors")
    assert md["ss_num_reg_images"] == "2" and md["ss_prior_loss_weight"] == "0.5"
    assert md["ss_network_dropout"] == "0.1" and md["ss_multires_noise_iterations"] == "4"
    assert md["ss_max_token_length"] == "150"
    assert md["ss_loss_type"] == "smooth_l1" and md["ss_huber_schedule"] == "exponential"
    assert md["ss_huber_c"] == "0.2"
    assert json.loads(md["ss_reg_dataset_dirs"]) == {"1_dog": {"n_repeats": 1, "img_count": 2}}
    assert md["ss_mixed_precision"] == "bf16" and md["ss_enable_bucket"] == "True"
    assert "training in fp32 instead" in captured.err  # bf16 is emulated on CPUs
    assert "full_fp16 / full_bf16 ignored" in captured.err
    assert md["ss_optimizer"] == "bitsandbytes.optim.adamw.AdamW8bit"
    assert md["ss_text_encoder_lr"] == "5e-05" and md["ss_unet_lr"] == "0.0002"
    buckets = json.loads(md["ss_bucket_info"])["buckets"]
    assert len(buckets) >= 2  # wide and tall images got their own buckets
    npz = sorted(p.name for p in sub.glob("*.npz"))
    assert len(npz) == 4 and all(n.endswith("_sd.npz") for n in npz)
    tags = scalars(tmp_path / "logs")
    lrs = [v for _, v in tags["lr/unet"]]
    assert lrs[0] < 2e-4 and max(lrs) == pytest.approx(2e-4, rel=0.2)  # warmup, then cosine
    assert max(v for _, v in tags["lr/textencoder"]) == pytest.approx(5e-5, rel=0.2)


def test_rotation_keeps_last_epochs(tmp_path, sd15, capsys):
    data = make_train_dir(tmp_path / "data", n=1, repeats=1)
    config = write_config(
        tmp_path,
        sd15,
        data=data,
        max_train_epochs=4,
        save_last_n_epochs=2,
        save_state=True,
        save_last_n_epochs_state=1,
        logging_dir=None,
    )
    rc = run_trainer(["--config_file", str(config)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    names = sorted(p.name for p in (tmp_path / "output").iterdir())
    assert names == [
        "tl-000002.safetensors",
        "tl-000003-state",
        "tl-000003.safetensors",
        "tl-state",
        "tl.safetensors",
    ]
    assert (
        "removing old checkpoint: " + str(tmp_path / "output" / "tl-000001.safetensors")
        in captured.err
    )


def test_module_entry_streams(tmp_path, sd15, subprocess_env):
    """As a child process: stdout holds only kohya's lines; the bar and logs go to stderr."""
    import subprocess
    import sys

    data = make_train_dir(tmp_path / "data", n=1, repeats=1)
    config = write_config(tmp_path, sd15, data=data, max_train_epochs=1, logging_dir=None)
    env = dict(subprocess_env, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "kohyagen.trainer", "--config_file", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "accelerator device: cpu"
    assert lines[-1] == f"saving checkpoint: {tmp_path / 'output' / 'tl.safetensors'}"
    known = (
        "accelerator device: ",
        "import network module: ",
        "prepare optimizer, data loader etc.",
        "override steps. ",
        "running training / ",
        "  ",
        "epoch ",
        "saving checkpoint: ",
    )
    assert all(line == "" or line.startswith(known) for line in lines), lines
    assert "steps: 100%" in proc.stderr and "model saved." in proc.stderr


def test_resume_from_a_mid_epoch_step_state(tmp_path, sd15, capsys):
    from safetensors.torch import load_file

    data = make_train_dir(tmp_path / "data", n=2, repeats=2)  # 4 steps per epoch
    full_dir = tmp_path / "full"
    full_dir.mkdir()
    config = write_config(
        full_dir, sd15, data=data, save_every_n_steps=3, save_state=True, logging_dir=None
    )
    assert run_trainer(["--config_file", str(config)]) == 0
    capsys.readouterr()
    state = full_dir / "output" / "tl-step00000006-state"  # step 6 is inside epoch 2
    assert json.loads((state / "train_state.json").read_text()) == {
        "current_epoch": 1,
        "current_step": 6,
    }
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    config2 = write_config(resumed_dir, sd15, data=data, logging_dir=None)
    assert run_trainer(["--config_file", str(config2), "--resume", str(state)]) == 0
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "epoch 1/2" not in out
    full = load_file(full_dir / "output" / "tl.safetensors")
    resumed = load_file(resumed_dir / "output" / "tl.safetensors")
    assert all(resumed[k].allclose(full[k], atol=1e-5) for k in full)


def test_network_weights_load_back_into_the_network(sd15_run, sd15):
    import diffusers
    from safetensors.torch import load_file

    from kohyagen.trainer.lora import LoRANetwork

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(sd15)
    net = LoRANetwork(pipe.unet, [pipe.text_encoder], rank=4, alpha=2, sdxl=False)
    state = load_file(sd15_run["tmp"] / "output" / "tl.safetensors")
    assert net.load_kohya_weights(state) == len(state) // 3
    again = net.kohya_state_dict()
    assert set(again) == set(state)
    assert all(again[k].float().equal(state[k].float()) for k in state)

    from kohyagen.errors import ConfigError
    from kohyagen.trainer.lora_weights import load_network_weights

    wider = LoRANetwork(pipe.unet, [pipe.text_encoder], rank=8, alpha=2, sdxl=False)
    with pytest.raises(ConfigError, match="network_dim"):
        load_network_weights(wider, sd15_run["tmp"] / "output" / "tl.safetensors")
    with pytest.raises(ConfigError, match="not found"):
        load_network_weights(wider, sd15_run["tmp"] / "nope.safetensors")


def test_base_weights_are_merged_before_training(sd15_run, sd15, tmp_path, capsys):
    import diffusers
    import torch

    from kohyagen.trainer.lora import LoRANetwork
    from kohyagen.trainer.lora_weights import read_lora_file
    from kohyagen.trainer.merge import merge_base_weights
    from kohyagen.trainer.models import Components
    from kohyagen.trainer.output import Console

    lora = sd15_run["tmp"] / "output" / "tl.safetensors"
    state = read_lora_file(lora)
    for key in state:  # the trained deltas are tiny; make them visible
        if key.endswith("lora_up.weight"):
            state[key] = torch.randn_like(state[key]) * 0.05
    from safetensors.torch import save_file

    boosted = tmp_path / "boosted.safetensors"
    save_file(state, boosted)

    def unet_out(pipe, seed=0):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(1, 4, 8, 8, generator=gen)
        hidden = torch.randn(1, 77, pipe.unet.config.cross_attention_dim, generator=gen)
        with torch.no_grad():
            return pipe.unet(x, torch.tensor([500]), hidden).sample

    applied = diffusers.StableDiffusionPipeline.from_pretrained(sd15)
    net = LoRANetwork(applied.unet, [applied.text_encoder], rank=4, alpha=2, sdxl=False)
    net.load_kohya_weights(state)
    for mod in net.unet_loras:
        mod.multiplier = 0.5
    net.apply_to()
    net.eval()
    expected = unet_out(applied)

    merged = diffusers.StableDiffusionPipeline.from_pretrained(sd15)
    plain = unet_out(merged)
    parts = Components(
        merged.unet, merged.vae, [merged.text_encoder], [merged.tokenizer], False, False, 0.18
    )
    merge_base_weights(parts, [str(boosted)], [0.5], sdxl=False, console=Console())
    out = unet_out(merged)
    assert not torch.allclose(out, plain, atol=1e-4)
    assert torch.allclose(out, expected, atol=1e-4)  # merged = applied at multiplier 0.5
    assert "merging module: " in capsys.readouterr().out

    data = make_train_dir(tmp_path / "data", n=1, repeats=1)
    config = write_config(
        tmp_path, sd15, data=data, max_train_epochs=1, base_weights=[str(boosted)], logging_dir=None
    )
    rc = run_trainer(["--config_file", str(config)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    assert f"merging module: {boosted} with multiplier 1.0" in captured.out
    assert f"all weights merged: {boosted}" in captured.out
