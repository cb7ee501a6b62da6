"""Model family detection for lint, and the rules that depend on the family."""

import json
import struct
from pathlib import Path

import pytest

from kohyagen.config.family import detect_family, read_safetensors_keys
from kohyagen.config.lint import LintOptions, lint_files


def _safetensors(path: Path, names: list[str]) -> Path:
    header = {n: {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]} for n in names}
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0")
    return path


@pytest.mark.parametrize(
    ("training", "script", "family", "source"),
    [
        ({}, "sdxl_train_network.py", "sdxl", "script"),
        ({"v2": True}, "train_network.py", "sd2", "script"),
        ({"model_type": "chroma"}, "flux_train_network.py", "chroma", "script"),
        ({"t5xxl": "/m/t5.safetensors", "ae": "/m/ae.safetensors"}, None, "flux", "keys"),
        ({"t5xxl": "/m/t5", "model_type": "chroma"}, None, "chroma", "keys"),
        ({"clip_g": "/m/g", "t5xxl": "/m/t5"}, None, "sd3", "keys"),
        ({"gemma2": "/m/gemma"}, None, "lumina2", "keys"),
        ({"byt5": "/m/byt5"}, None, "hunyuan-image", "keys"),
        ({"qwen3": "/m/qwen"}, None, "anima", "keys"),
        ({"cache_text_encoder_outputs": True}, None, "sdxl", "keys"),
        ({"v2": True}, None, "sd2", "keys"),
        ({"pretrained_model_name_or_path": "/m/illustriousXL_v01.safetensors"}, None, "sdxl",
         "model name"),
        ({"pretrained_model_name_or_path": "Laxhar/noobai-XL-Vpred-1.0"}, None, "sdxl",
         "model name"),
        ({"pretrained_model_name_or_path": "/m/ponyDiffusionV6XL.safetensors"}, None, "sdxl",
         "model name"),
        ({"pretrained_model_name_or_path": "/m/v1-5-pruned.safetensors"}, None, "sd15",
         "model name"),
        ({"pretrained_model_name_or_path": "/m/my_model.safetensors"}, None, None, ""),
    ],
)  # fmt: skip
def test_family_from_script_keys_and_name(tmp_path, training, script, family, source):
    guess = detect_family(training, model=None, script=script, base_dir=tmp_path)
    assert (guess.name, guess.source) == (family, source)


@pytest.mark.parametrize(
    ("tensor", "family"),
    [
        ("cond_stage_model.transformer.text_model.embeddings.position_ids", "sd15"),
        ("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", "sd2"),
        ("conditioner.embedders.1.model.ln_final.weight", "sdxl"),
        ("double_blocks.0.img_attn.proj.weight", "flux"),
        ("model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "sd3"),
    ],
)
def test_family_from_the_model_file_header(tmp_path, tensor, family):
    _safetensors(tmp_path / "model.safetensors", ["first_stage_model.x", tensor])
    guess = detect_family({"pretrained_model_name_or_path": "model.safetensors"}, model=None,
                          script=None, base_dir=tmp_path)  # fmt: skip
    assert (guess.name, guess.source, guess.detail) == (family, "model file", tensor)


def test_header_reading_is_bounded(tmp_path):
    huge = tmp_path / "x.safetensors"
    huge.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    assert read_safetensors_keys(huge) is None
    (tmp_path / "short.safetensors").write_bytes(b"abc")
    assert read_safetensors_keys(tmp_path / "short.safetensors") is None


def test_named_family_wins(tmp_path):
    guess = detect_family({"v2": True}, model="sdxl", script="train_network.py", base_dir=tmp_path)
    assert (guess.name, guess.source) == ("sdxl", "--model")


BASE = """
pretrained_model_name_or_path = "{model}"
network_module = "networks.lora"
output_dir = "/abs/out"
resolution = "1024"
save_every_n_epochs = 1
max_train_epochs = 4
{extra}
"""


def _lint(tmp_path, base, extra, **options):
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE.format(model=base, extra=extra))
    found = lint_files([cfg], cwd=tmp_path, options=LintOptions(**options))
    return {(f.code, f.severity.value) for f in found}


@pytest.mark.parametrize(
    ("model", "options", "steps", "expected"),
    [
        ("stabilityai/stable-diffusion-xl-base-1.0", {}, 32, None),
        ("runwayml/stable-diffusion-v1-5", {}, 32, "error"),
        ("someone/my-model", {}, 32, "warning"),
        ("someone/my-model", {"model": "sdxl"}, 32, None),
        ("someone/my-model", {"model": "flux"}, 32, "error"),
        ("someone/my-model", {"script": "sd3_train_network.py"}, 32, None),
        ("someone/my-model", {"model": "anima"}, 16, None),
        ("someone/my-model", {}, 48, "error"),
    ],
)
def test_bucket_step_by_family(tmp_path, model, options, steps, expected):
    codes = _lint(tmp_path, model, f"bucket_reso_steps = {steps}\ntrain_data_dir = '/nope'",
                  **options)  # fmt: skip
    got = {sev for code, sev in codes if code == "bucket-steps"}
    assert got == ({expected} if expected else set())


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("Laxhar/noobai-XL-Vpred-1.0", set()),
        ("runwayml/stable-diffusion-v1-5", {("v-param-without-v2", "warning")}),
        ("someone/my-model", {("v-param-without-v2", "warning")}),
    ],
)
def test_v_parameterization_is_right_for_sdxl_vpred(tmp_path, model, expected):
    codes = _lint(tmp_path, model, "v_parameterization = true\ntrain_data_dir = '/nope'")
    assert {c for c in codes if c[0] == "v-param-without-v2"} == expected


def test_clip_skip_by_family(tmp_path):
    sdxl = _lint(tmp_path, "stabilityai/stable-diffusion-xl-base-1.0", "clip_skip = 2")
    assert ("clip-skip-ignored", "warning") in sdxl
    sd15 = _lint(tmp_path, "runwayml/stable-diffusion-v1-5", "clip_skip = 2")
    assert not {c for c in sd15 if c[0] == "clip-skip-ignored"}


def test_dim_above_layer_width(tmp_path):
    codes = _lint(tmp_path, "runwayml/stable-diffusion-v1-5", "network_dim = 512")
    assert ("dim-above-width", "warning") in codes
    codes = _lint(tmp_path, "stabilityai/stable-diffusion-xl-base-1.0", "network_dim = 512")
    assert not {c for c in codes if c[0] == "dim-above-width"}


def test_flux_keys_are_not_unknown(tmp_path):
    extra = 't5xxl = "/m/t5.safetensors"\nae = "/m/ae.safetensors"\nguidance_scale = 1.0'
    codes = _lint(tmp_path, "/m/flux1-dev.safetensors", extra)
    assert not {c for c in codes if c[0] == "unknown-key"}
