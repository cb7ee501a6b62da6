"""The builtin trainer on a dataset config with validation, on SDXL and on SD2 v-prediction."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from tests.trainer_helpers import (
    generate,
    load_kohya_reference,
    make_train_dir,
    run_trainer,
    scalars,
    toml_value,
    write_config,
)


@pytest.fixture(scope="module")
def kohya_ref() -> dict:
    return load_kohya_reference()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from kohyagen.run.tiny import make_tiny_pipeline

    root = tmp_path_factory.mktemp("models")
    return {kind: make_tiny_pipeline(root / kind, kind) for kind in ("sd15", "sd2", "sdxl")}


def _metadata(path: Path) -> tuple[dict[str, str], list[str]]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata()), sorted(f.keys())


def test_dataset_config_with_validation_split_like_kohya(tmp_path, models, kohya_ref, capsys):
    data = make_train_dir(tmp_path / "data")
    ds = tmp_path / "dataset_config.toml"
    ds.write_text(
        '[general]\ncaption_extension = ".txt"\nshuffle_caption = false\nkeep_tokens = 0\n\n'
        "[[datasets]]\nresolution = 64\nbatch_size = 1\nenable_bucket = false\n"
        "validation_split = 0.25\nvalidation_seed = 1234\n\n"
        f"  [[datasets.subsets]]\n  image_dir = {toml_value(str(data / '2_sks'))}\n"
        '  class_tokens = "sks"\n  num_repeats = 2\n'
    )
    config = write_config(
        tmp_path,
        models["sd15"],
        dataset_config=str(ds),
        validation_seed=1234,
        validate_every_n_epochs=1,
    )
    rc = run_trainer(["--config_file", str(config)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    ref = kohya_ref["run_B"]["stdout"]
    ref = ref.replace(kohya_ref["run_B"]["output_dir"] + "/harness", f"{tmp_path}/output/tl")
    assert captured.out == ref
    assert "epoch validation steps" in captured.err and "val_epoch_avg_loss=" in captured.err
    tags = scalars(tmp_path / "logs")
    assert set(tags) == set(kohya_ref["run_B"]["scalar_tags"])
    assert [s for s, _ in tags["loss/validation/epoch_average"]] == [1, 2]
    md, _ = _metadata(tmp_path / "output" / "tl.safetensors")
    ref_md = kohya_ref["run_B"]["metadata"]
    assert set(md) == set(ref_md)
    assert md["ss_num_validation_images"] == "1" and md["ss_num_train_images"] == "6"
    assert json.loads(md["ss_datasets"])[0]["subsets"][0]["img_count"] == 3


def test_sdxl_two_epochs_sgm_keys_and_diffusers_load(tmp_path, models, capsys):
    import diffusers

    data = make_train_dir(tmp_path / "data", n=2, repeats=1)
    config = write_config(tmp_path, models["sdxl"], data=data)
    text = config.read_text()
    config.write_text("# kohyagen-script: sdxl_train_network.py\n" + text)
    rc = run_trainer(["--config_file", str(config)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    out = tmp_path / "output"
    assert sorted(p.name for p in out.iterdir()) == ["tl-000001.safetensors", "tl.safetensors"]
    md, keys = _metadata(out / "tl.safetensors")
    assert md["ss_base_model_version"] == "sdxl_base_v1-0"
    assert md["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    prefixes = {k.split("_blocks")[0] for k in keys if k.startswith("lora_unet_")}
    assert {"lora_unet_input", "lora_unet_output"} <= prefixes
    assert any(k.startswith("lora_unet_middle_block_1_") for k in keys)
    assert any(k.startswith("lora_te1_text_model_encoder_layers_0_") for k in keys)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_0_") for k in keys)
    # layers_per_block 1: down block 1's attention is SGM input block 1 + 1 * 2 + 0 = 3
    assert any(k.startswith("lora_unet_input_blocks_3_1_transformer_blocks_0_attn1") for k in keys)

    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(models["sdxl"])

    def image():
        return generate(pipe)

    before = image()
    pipe.load_lora_weights(str(out / "tl.safetensors"))
    assert abs(image() - before).max() > 1e-4
    placed = sum(
        1
        for part in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
        for n, _ in part.named_modules()
        if n.endswith("lora_A")
    )
    assert placed == len(keys) // 3  # every module of the file found its place


def test_sd2_v_prediction_metadata_and_unet_only(tmp_path, models, capsys):
    data = make_train_dir(tmp_path / "data", n=2, repeats=1)
    config = write_config(
        tmp_path,
        models["sd2"],
        data=data,
        v2=True,
        v_parameterization=True,
        network_train_unet_only=True,
        min_snr_gamma=5.0,
        noise_offset=0.05,
        ip_noise_gamma=0.1,
        zero_terminal_snr=True,
        min_timestep=990,  # the steps where zero terminal SNR matters
        debiased_estimation_loss=True,
        scale_v_pred_loss_like_noise_pred=True,
        save_precision="fp16",
        max_train_epochs=1,
    )
    rc = run_trainer(["--config_file", str(config)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    md, keys = _metadata(tmp_path / "output" / "tl.safetensors")
    assert md["ss_v2"] == "True" and md["ss_base_model_version"] == "sd_v2_v"
    assert md["modelspec.prediction_type"] == "v"
    assert md["ss_min_snr_gamma"] == "5.0" and md["ss_noise_offset"] == "0.05"
    assert md["ss_ip_noise_gamma"] == "0.1" and md["ss_debiased_estimation"] == "True"
    assert md["ss_zero_terminal_snr"] == "True"
    import math

    losses = [v for _, v in scalars(tmp_path / "logs")["loss/current"]]
    assert losses and all(math.isfinite(v) for v in losses)
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "output" / "tl.safetensors")
    assert {t.dtype for t in tensors.values()} == {__import__("torch").float16}
    tags = scalars(tmp_path / "logs")
    assert "lr/unet" in tags and "lr/group0" in tags and "lr/textencoder" not in tags


def test_samples_written_with_kohya_names(tmp_path, models, capsys):
    import re

    data = make_train_dir(tmp_path / "data", n=1, repeats=1)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# a comment\nsks, color 0 --w 64 --h 64 --d 7 --s 2 --l 5.0 --n blurry\n")
    config = write_config(
        tmp_path,
        models["sd15"],
        data=data,
        sample_prompts=str(prompts),
        sample_every_n_epochs=1,
        sample_sampler="euler_a",
    )
    rc = run_trainer(["--config_file", str(config)])
    assert rc == 0, capsys.readouterr().err[-2000:]
    names = sorted(p.name for p in (tmp_path / "output" / "sample").iterdir())
    assert len(names) == 2
    assert re.fullmatch(r"tl_e000001_00_\d{14}_7\.png", names[0])
    assert re.fullmatch(r"tl_e000002_00_\d{14}_7\.png", names[1])


def test_loss_falls_on_an_easy_dataset(tmp_path, models, capsys):
    """Four copies of one solid colour; validation loss (fixed noise and timesteps) must fall."""
    from PIL import Image

    sub = tmp_path / "data" / "4_sks"
    sub.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (64, 64), (200, 60, 30)).save(sub / f"{i}.png")
    config = write_config(
        tmp_path,
        models["sd15"],
        data=tmp_path / "data",
        learning_rate=3e-3,
        max_train_epochs=6,
        save_every_n_epochs=None,
        cache_latents=True,
        train_batch_size=2,
        validation_split=0.25,
        validation_seed=1,
    )
    rc = run_trainer(["--config_file", str(config)])
    assert rc == 0, capsys.readouterr().err[-2000:]
    val = [v for _, v in scalars(tmp_path / "logs")["loss/validation/epoch_average"]]
    assert len(val) == 6
    assert all(b < a for a, b in itertools.pairwise(val)), val
    assert val[-1] < val[0] * 0.95, val


def test_sdxl_cached_text_encoder_outputs(tmp_path, models, capsys):
    data = make_train_dir(tmp_path / "data", n=2, repeats=1)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("sks, color 0 --w 64 --h 64 --d 1 --s 2\n")
    config = write_config(
        tmp_path,
        models["sdxl"],
        data=data,
        max_train_epochs=1,
        network_train_unet_only=True,
        cache_text_encoder_outputs=True,
        cache_latents=True,
        sample_prompts=str(prompts),
        sample_every_n_epochs=1,
    )
    config.write_text("# kohyagen-script: sdxl_train_network.py\n" + config.read_text())
    rc = run_trainer(["--config_file", str(config)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    _, keys = _metadata(tmp_path / "output" / "tl.safetensors")
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    assert len(list((tmp_path / "output" / "sample").glob("tl_e000001_00_*_1.png"))) == 1

    # Captions that change per epoch cannot be cached: refused before training.
    config.write_text(config.read_text() + "shuffle_caption = true\n")
    rc = run_trainer(["--config_file", str(config)])
    assert rc == 1
    assert "cache_text_encoder_outputs" in capsys.readouterr().err


def test_conv_dim_adds_resnet_convs_and_loads_in_diffusers(tmp_path, models, capsys):
    import diffusers
    from safetensors.torch import load_file

    data = make_train_dir(tmp_path / "data", n=1, repeats=2)
    config = write_config(
        tmp_path,
        models["sd15"],
        data=data,
        max_train_epochs=1,
        network_args=["conv_dim=4", "conv_alpha=2"],
        learning_rate=1e-3,
        logging_dir=None,
    )
    rc = run_trainer(["--config_file", str(config)])
    assert rc == 0, capsys.readouterr().err[-2000:]
    path = tmp_path / "output" / "tl.safetensors"
    tensors = load_file(path)
    down = tensors["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"]
    assert down.shape[0] == 4 and down.shape[2:] == (3, 3)
    assert float(tensors["lora_unet_down_blocks_0_resnets_0_conv1.alpha"]) == 2.0
    assert "lora_unet_down_blocks_0_downsamplers_0_conv.lora_up.weight" in tensors
    assert "lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight" in tensors
    md, _ = _metadata(path)
    assert json.loads(md["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "2"}

    # dim_from_weights: the same modules, ranks and alphas as the file, whatever network_dim
    again = tmp_path / "again"
    again.mkdir()
    config = write_config(
        again,
        models["sd15"],
        data=data,
        max_train_epochs=1,
        network_dim=16,
        network_weights=str(path),
        dim_from_weights=True,
        logging_dir=None,
    )
    rc = run_trainer(["--config_file", str(config)])
    assert rc == 0, capsys.readouterr().err[-2000:]
    continued = load_file(again / "output" / "tl.safetensors")
    assert set(continued) == set(tensors)
    assert all(continued[k].shape == tensors[k].shape for k in tensors)
    assert float(continued["lora_unet_down_blocks_0_resnets_0_conv1.alpha"]) == 2.0

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(models["sd15"])
    pipe.load_lora_weights(str(path))
    conv_lora = [n for n, _ in pipe.unet.named_modules() if "resnets" in n and n.endswith("lora_A")]
    assert conv_lora  # diffusers recognised the conv (LoCon) modules too
    assert generate(pipe, "sks").shape == (1, 64, 64, 3)


def test_sdxl_conv_dim_uses_sgm_names_and_loads(tmp_path, models, capsys):
    import diffusers
    from safetensors.torch import load_file

    data = make_train_dir(tmp_path / "data", n=1, repeats=1)
    config = write_config(
        tmp_path,
        models["sdxl"],
        data=data,
        max_train_epochs=1,
        network_args=["conv_dim=2"],
        network_train_unet_only=True,
        logging_dir=None,
    )
    config.write_text("# kohyagen-script: sdxl_train_network.py\n" + config.read_text())
    rc = run_trainer(["--config_file", str(config)])
    assert rc == 0, capsys.readouterr().err[-2000:]
    path = tmp_path / "output" / "tl.safetensors"
    keys = set(load_file(path))
    # layers_per_block 1: down block 0 resnet 0 is input block 1; its downsampler input block 2
    assert "lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight" in keys
    assert "lora_unet_input_blocks_2_0_op.lora_down.weight" in keys
    assert "lora_unet_middle_block_2_0_out_layers_3.lora_up.weight" not in keys
    assert "lora_unet_middle_block_2_out_layers_3.lora_up.weight" in keys
    assert "lora_unet_output_blocks_1_2_conv.lora_up.weight" in keys
    assert not any("resnets" in k or "down_blocks" in k for k in keys)

    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(models["sdxl"])
    pipe.load_lora_weights(str(path))
    loaded = {n for n, _ in pipe.unet.named_modules() if n.endswith("lora_A")}
    assert len(loaded) == len(keys) // 3  # every module of the file found its place
    assert any("resnets" in n and "conv1" in n for n in loaded)
    assert any("downsamplers" in n for n in loaded) and any("upsamplers" in n for n in loaded)


def test_two_datasets_train_together(tmp_path, models, capsys):
    a = make_train_dir(tmp_path / "a", n=2, repeats=1)
    b = make_train_dir(tmp_path / "b", n=4, repeats=1)
    ds = tmp_path / "dataset_config.toml"
    ds.write_text(
        '[general]\ncaption_extension = ".txt"\n'
        "[[datasets]]\nresolution = 64\nbatch_size = 1\n"
        f"  [[datasets.subsets]]\n  image_dir = {toml_value(str(a / '1_sks'))}\n"
        "[[datasets]]\nresolution = [64, 64]\nbatch_size = 2\n"
        f"  [[datasets.subsets]]\n  image_dir = {toml_value(str(b / '1_sks'))}\n"
        "  num_repeats = 2\n"
    )
    config = write_config(
        tmp_path, models["sd15"], dataset_config=str(ds), max_train_epochs=1, logging_dir=None
    )
    rc = run_trainer(["--config_file", str(config)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    assert "  batch size per device / バッチサイズ: 1, 2" in captured.out
    assert "  num train images * repeats / 学習画像の数×繰り返し回数: 10" in captured.out
    assert "  num batches per epoch / 1epochのバッチ数: 6" in captured.out  # 2 x 1 + 8 / 2
    md, _ = _metadata(tmp_path / "output" / "tl.safetensors")
    entries = json.loads(md["ss_datasets"])
    assert [e["batch_size_per_device"] for e in entries] == [1, 2]
    assert [e["num_train_images"] for e in entries] == [2, 8]
