"""Every kohya LoRA family x every GPU preset: the acceptance test of issue 12, and the
family data, memory levers, model-file checks and variants behind it."""

import json
from pathlib import Path

import pytest

from kohyagen.config import presets, schema
from kohyagen.config.families import dit_need
from kohyagen.config.family import BUCKET_STEP, SCRIPT_FAMILY
from kohyagen.config.family_settings import settings_for, smallest_fitting_gpu
from kohyagen.config.lint import lint_files
from kohyagen.config.render import render_configs, write_configs
from kohyagen.errors import ConfigError, ModelNotFound, PresetError
from tests.family_fixtures import TENSORS, family_files, write_safetensors
from tests.test_config_render import make_train_dir

DIT = [m.name for m in presets.list_models() if m.is_dit]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_train_dir(tmp_path_factory.mktemp("ds"), folders=(("5_sks", 8),))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, dict[str, str]]:
    root = tmp_path_factory.mktemp("models")
    return {name: family_files(name, root) for name in DIT}


def test_the_six_families_are_data():
    assert set(DIT) == {"flux", "chroma", "sd3", "lumina2", "hunyuan-image", "anima"}
    for name in DIT:
        model = presets.get_model(name)
        # kohya asserts the step per script: a preset agrees with the family its script runs as
        assert model.bucket_step == BUCKET_STEP[SCRIPT_FAMILY[model.script_name]]
        assert model.family.files and model.apps
    steps = {name: presets.get_model(name).bucket_step for name in DIT}
    assert steps == {"flux": 64, "chroma": 64, "sd3": 32, "lumina2": 64, "hunyuan-image": 64,
                     "anima": 16}  # fmt: skip
    assert presets.get_model("FLUX.1-dev").name == "flux"
    assert presets.get_model("sd3.5").name == "sd3"
    assert presets.get_model("hunyuan").name == "hunyuan-image"


def _render(dataset, out, model, gpu, files, **kw):
    return render_configs(dataset, model=model, gpu=gpu, out_dir=out, model_files=files, **kw)


@pytest.mark.parametrize("model", DIT)
@pytest.mark.parametrize("gpu", [g.name for g in presets.list_gpus()])
def test_every_family_on_every_gpu(dataset, files, tmp_path, shared_dir, model, gpu):
    preset, card = presets.get_model(model), presets.get_gpu(gpu)
    try:
        rendered = _render(dataset, tmp_path / "cfg", model, gpu, files[model])
    except PresetError as exc:
        fits = smallest_fitting_gpu(preset)
        assert fits and presets.get_gpu(fits).vram_gb > card.vram_gb
        assert f"--gpu {fits}" in exc.hint
        return
    flat = rendered.training
    script = preset.script_name
    assert rendered.training_text.splitlines()[0] == f"# kohyagen-script: {preset.script}"
    assert schema.script_for_config(rendered.training_text, flat) == script
    assert schema.script_for_config("", flat) == script  # told apart without the marker too
    table = {
        a["dest"]: a
        for a in json.loads((shared_dir / "kohya" / f"{script}.args.json").read_text())["arguments"]
    }
    assert set(flat) <= set(table)
    assert list(schema.validator_for(script).iter_errors(flat)) == []
    assert flat["network_module"] == preset.network_module
    assert flat["network_train_unet_only"] and flat["cache_text_encoder_outputs"]
    ds = rendered.dataset
    assert ds["general"]["bucket_reso_steps"] % preset.bucket_step == 0
    assert "shuffle_caption" not in ds["general"]  # kohya asserts it away with cached outputs
    assert [f for f in rendered.findings if f.severity.value == "error"] == []
    fp8 = bool(flat.get("fp8_base") or flat.get("fp8_scaled"))
    need = dit_need(
        preset.family.memory, batch_size=flat["train_batch_size"],
        gradient_checkpointing=flat["gradient_checkpointing"],
        optimizer=flat["optimizer_type"], fp8=fp8, blocks_to_swap=flat.get("blocks_to_swap", 0),
    )  # fmt: skip
    assert need <= card.vram_gb * presets.fit_params().usable_fraction
    for key in flat:  # every value carries its reason as a comment
        assert f"\n{key} = " in rendered.training_text
    write_configs(rendered)
    findings = lint_files([rendered.training_path], cwd=tmp_path)
    assert [f for f in findings if f.severity.value == "error"] == []


def test_flux_recipes_follow_kohyas_vram_table(dataset, files, tmp_path):
    def plan(gpu):
        s = settings_for("flux", gpu)
        return s["train_batch_size"].value, s["fp8_base"].value, s.get("blocks_to_swap")

    batch, fp8, swap = plan("rtx4090")
    assert (batch, fp8, swap) == (2, True, None)  # kohya: 24 GB, batch 2, no swapping
    batch, fp8, swap = plan("rtx4080")
    assert batch == 1 and fp8 and 0 < swap.value < 16  # 16 GB: batch 1 and some swapping
    twelve = plan("rtx3060-12")[2].value
    eight = plan("8gb")[2].value
    assert 16 <= twelve < eight <= 35  # 12 GB: ~16 blocks; 8 GB: ~28; never past kohya's max
    big = settings_for("flux", "a100-80")
    assert not big["fp8_base"].value and "blocks_to_swap" not in big  # 16-bit when it fits
    text = _render(dataset, tmp_path, "flux", "rtx3060-12", files["flux"]).training_text
    assert "blocks_to_swap = " in text and "saves about" in text
    assert "guidance_scale = 1.0" in text and 'timestep_sampling = "flux_shift"' in text


def test_sample_prompts_follow_the_family(dataset, files, tmp_path):
    chroma = _render(dataset, tmp_path / "c", "chroma", "a100-80", files["chroma"], samples=True)
    lines = [x for x in chroma.sample_prompts_text.splitlines() if not x.startswith("#")]
    assert lines and all("--l 4 " in x and "--g 0" in x and "--w 1024" in x for x in lines)
    assert "sample_sampler" not in chroma.training  # the DiT samplers do not read it
    flux = _render(dataset, tmp_path / "f", "flux", "a100-80", files["flux"], samples=True)
    assert "--g 0" not in flux.sample_prompts_text


def test_text_encoders_that_do_not_fit_while_caching(dataset, files, tmp_path):
    rendered = _render(dataset, tmp_path, "flux", "8gb", files["flux"])
    assert any("t5xxl_fp8_e4m3fn" in n for n in rendered.notes)
    assert "fp8_vl" not in settings_for("hunyuan-image", "rtx4090")  # 16.5 GB fits
    small = settings_for("hunyuan-image", "rtx4080")
    assert small["fp8_scaled"].value and small["fp8_vl"].value  # Qwen2.5-VL halved to fit
    tiny = settings_for("hunyuan-image", "8gb")
    assert tiny["text_encoder_cpu"].value and tiny["cache_text_encoder_outputs_to_disk"].value
    assert tiny["blocks_to_swap"].value == 37  # kohya's 8 GB recipe: the most it can swap


def test_nothing_fits_names_the_smallest_preset():
    with pytest.raises(PresetError) as exc:
        settings_for("sdxl", "8gb")
    assert "--gpu 12gb" in exc.value.hint or "--gpu rtx3060-12" in exc.value.hint
    mem = presets.get_model("hunyuan-image").family.memory
    tiny = presets.GpuPreset("tiny", "tiny", 4, True, True, 0.1)
    with pytest.raises(PresetError, match="does not fit on tiny") as exc:
        settings_for("hunyuan-image", tiny)
    assert "--gpu" in exc.value.hint and mem.max_swap == 37


def test_missing_and_wrong_model_files_are_refused_before_launch(dataset, files, tmp_path):
    with pytest.raises(ModelNotFound, match="missing --model-file clip_l=PATH") as exc:
        _render(dataset, tmp_path, "flux", "rtx4090", {"dit": files["flux"]["dit"],
                "t5xxl": files["flux"]["t5xxl"], "ae": files["flux"]["ae"]})  # fmt: skip
    assert "hf:comfyanonymous/flux_text_encoders/clip_l.safetensors" in str(exc.value)
    swapped = {**files["flux"], "dit": files["flux"]["t5xxl"]}
    with pytest.raises(ModelNotFound, match="does not look like a DiT"):
        _render(dataset, tmp_path, "flux", "rtx4090", swapped)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelNotFound, match=r"not a \.safetensors file"):
        _render(dataset, tmp_path, "flux", "rtx4090", {**files["flux"], "ae": str(broken)})
    with pytest.raises(ModelNotFound, match="does not exist"):
        _render(dataset, tmp_path, "flux", "rtx4090", {**files["flux"], "t5xxl": "nope.sft"})
    e5m2 = write_safetensors(tmp_path / "e5m2.safetensors", TENSORS["dit"], dtype="F8_E5M2")
    with pytest.raises(ModelNotFound, match="float8_e4m3fn"):
        _render(dataset, tmp_path, "flux", "rtx4090", {**files["flux"], "dit": str(e5m2)})
    with pytest.raises(ConfigError, match="has no model file 'gemma2'"):
        _render(dataset, tmp_path, "flux", "rtx4090", {**files["flux"], "gemma2": "x"})
    with pytest.raises(ConfigError, match="not --model-file"):
        _render(dataset, tmp_path, "sd15", "rtx4090", {"dit": "x"})


def test_kohya_option_names_and_base_model_work_too(dataset, files, tmp_path):
    f = files["flux"]
    given = {"clip_l": f["clip_l"], "t5xxl": f["t5xxl"], "ae": f["ae"]}
    rendered = render_configs(dataset, model="flux", gpu="rtx4090", out_dir=tmp_path,
                              model_files=given, base_model=f["dit"])  # fmt: skip
    assert rendered.training["pretrained_model_name_or_path"] == f["dit"]
    assert rendered.training["t5xxl"] == f["t5xxl"]


def test_variants_are_read_from_the_weights(dataset, files, tmp_path):
    schnell = write_safetensors(tmp_path / "schnell.safetensors", TENSORS["schnell"])
    rendered = _render(dataset, tmp_path, "flux", "rtx4090", {**files["flux"], "dit": str(schnell)})
    assert any("schnell" in n for n in rendered.notes)
    medium = write_safetensors(tmp_path / "sd3m.safetensors", TENSORS["sd3_medium"])
    sd3 = {**files["sd3"], "checkpoint": str(medium)}
    large = _render(dataset, tmp_path / "l", "sd3", "rtx3060-12", files["sd3"])
    small = _render(dataset, tmp_path / "m", "sd3", "rtx3060-12", sd3)
    assert any("3.5-large" in n for n in large.notes)
    assert any("variant: medium" in n for n in small.notes)
    assert small.training.get("blocks_to_swap", 0) < large.training.get("blocks_to_swap", 0)


def test_sd3_checkpoint_with_encoders_needs_no_separate_files(dataset, tmp_path):
    names = TENSORS["checkpoint"] + [
        "text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight",
        "text_encoders.clip_g.transformer.text_model.embeddings.token_embedding.weight",
        "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight",
    ]
    ckpt = write_safetensors(tmp_path / "sd3_incl.safetensors", names)
    rendered = _render(dataset, tmp_path, "sd3", "rtx4090", {"checkpoint": str(ckpt)})
    assert "t5xxl" not in rendered.training
    only = write_safetensors(tmp_path / "sd3_bare.safetensors", TENSORS["checkpoint"])
    with pytest.raises(ModelNotFound, match="clip_g"):
        _render(dataset, tmp_path, "sd3", "rtx4090", {"checkpoint": str(only)})
