import pytest

from kohyagen.config import presets, training_plan
from kohyagen.errors import PresetError

ISSUE_GPUS = [
    "rtx3060-12", "rtx3090", "rtx4080", "rtx4090", "rtx5090", "a6000", "a10g", "l4", "l40s",
    "t4", "v100", "a100-40", "a100-80", "h100", "h200",
    "8gb", "12gb", "16gb", "24gb", "40gb", "48gb", "80gb",
]  # fmt: skip


def test_models_and_gpus_from_data():
    models = {m.name: m for m in presets.list_models()}
    assert {"sd15", "sd2", "sdxl"} <= set(models)  # the DiT families: tests/test_families.py
    assert models["sd15"].script == "train_network.py" and models["sd15"].resolution == 512
    sd2 = models["sd2"]
    assert (sd2.resolution, sd2.min_side, sd2.v2, sd2.v_parameterization) == (768, 768, True, True)
    sdxl = models["sdxl"]
    assert sdxl.script == "sdxl_train_network.py" and sdxl.resolution == 1024
    assert sdxl.is_sdxl and sdxl.script_name == "sdxl_train_network"
    gpus = {g.name for g in presets.list_gpus()}
    assert set(ISSUE_GPUS) <= gpus
    for gpu in presets.list_gpus():
        assert gpu.vram_gb > 0 and gpu.price_per_hour > 0
    assert presets.get_gpu("rtx4090").fp8 and presets.get_gpu("rtx4090").bf16
    assert not presets.get_gpu("t4").bf16
    assert presets.get_gpu("RTX 4090").name == "rtx4090"  # aliases and spacing
    assert presets.get_gpu("3090").name == "rtx3090"
    assert presets.get_model("SD1.5").name == "sd15"


def test_unknown_names_list_valid_ones():
    with pytest.raises(PresetError, match="unknown GPU 'rtx9999'") as exc:
        presets.get_gpu("rtx9999")
    assert "rtx4090" in exc.value.hint
    with pytest.raises(PresetError, match="did you mean 'sdxl'"):
        presets.get_model("sdxk")


def test_memory_model_is_the_formula_in_the_data():
    m = presets.get_model("sd15").memory
    need = training_plan.memory_need(
        presets.get_model("sd15"), batch_size=3, gradient_checkpointing=False, optimizer="AdamW"
    )
    assert need == pytest.approx(m.base_gb + 3 * m.per_sample_gb + m.adamw_extra_gb)
    gc_need = training_plan.memory_need(
        presets.get_model("sd15"), batch_size=3, gradient_checkpointing=True
    )
    assert gc_need < need


@pytest.mark.parametrize("model", ["sd15", "sd2", "sdxl"])
@pytest.mark.parametrize("gpu", ISSUE_GPUS)
def test_every_plan_fits_its_gpu(model, gpu):
    m, g = presets.get_model(model), presets.get_gpu(gpu)
    try:
        plan = training_plan.plan_training(m, g)
    except PresetError:
        assert (model, gpu) == ("sdxl", "8gb")
        return
    assert plan.need_gb <= g.vram_gb * presets.fit_params().usable_fraction
    assert plan.batch_size <= m.max_batch
    # Nothing faster in the same stage would have fitted.
    for batch in presets.fit_params().batch_sizes:
        if batch > m.max_batch:
            continue
        for gc in (False, True):
            for opt in ("AdamW", "AdamW8bit"):
                need = training_plan.memory_need(
                    m, batch_size=batch, gradient_checkpointing=gc, optimizer=opt,
                    unet_only=plan.unet_only, fp8_base=plan.fp8_base,
                )  # fmt: skip
                if need <= plan.budget_gb:
                    assert training_plan.relative_throughput(batch, gc, opt) <= plan.throughput + 1e-9


def test_sdxl_on_8gb_refuses_clearly():
    with pytest.raises(PresetError, match=r"does not fit on 8gb") as exc:
        training_plan.training_settings("sdxl", "8gb")
    assert "--model sd15" in exc.value.hint


def test_sdxl_on_small_cards_uses_checkpointing_and_small_batch():
    s = training_plan.training_settings("sdxl", "12gb")
    assert s["gradient_checkpointing"].value is True
    assert s["train_batch_size"].value <= 2
    assert s["cache_text_encoder_outputs"].value is True
    assert s["network_train_unet_only"].value is True


def test_sd15_gets_larger_batch_on_24gb_than_on_8gb():
    big = training_plan.training_settings("sd15", "24gb")
    small = training_plan.training_settings("sd15", "8gb")
    assert big["train_batch_size"].value > 2
    assert big["gradient_checkpointing"].value is False
    assert big["train_batch_size"].value > small["train_batch_size"].value
    assert small["gradient_checkpointing"].value is True
    assert training_plan.plan_training(presets.get_model("sd15"), presets.get_gpu("8gb")).need_gb <= 7.2


def test_precision_attention_and_reasons():
    t4 = training_plan.training_settings("sd15", "t4")
    assert t4["mixed_precision"].value == "fp16"
    assert training_plan.training_settings("sd15", "a100-80")["mixed_precision"].value == "bf16"
    assert t4["sdpa"].value is True and "xformers" not in t4
    xf = training_plan.training_settings("sd15", "t4", attention="xformers")
    assert xf["xformers"].value is True and "sdpa" not in xf
    for setting in t4.values():
        assert setting.reason
    with pytest.raises(PresetError):
        training_plan.training_settings("sd15", "t4", attention="flash")


def test_fp8_only_on_fp8_cards():
    for gpu in presets.list_gpus():
        for model in presets.list_models():
            try:
                plan = training_plan.plan_training(model, gpu)
            except PresetError:
                continue
            assert not plan.fp8_base or gpu.fp8


@pytest.mark.parametrize(
    ("label", "vram", "name"),
    [
        ("NVIDIA GeForce RTX 4090", 23.99, "rtx4090"),
        ("NVIDIA A100-SXM4-80GB", 80, "a100-80"),
        ("NVIDIA A100-PCIE-40GB", 40, "a100-40"),
        ("NVIDIA H100 80GB HBM3", 79.6, "h100"),
        ("Tesla T4", 15.1, "t4"),
        ("NVIDIA L40S", 46, "l40s"),
        ("NVIDIA L4", 22.5, "l4"),
        ("NVIDIA RTX A4000", 16, "16gb"),  # unlisted: generic by memory
        ("NVIDIA GeForce RTX 2080 Ti", 11, "8gb"),
    ],
)
def test_match_gpu_from_driver_names(label, vram, name):
    assert presets.match_gpu(label, vram).name == name


def test_match_gpu_errors():
    with pytest.raises(PresetError, match="no GPU preset matches"):
        presets.match_gpu("Some Accelerator")
    with pytest.raises(PresetError, match="less than the smallest"):
        presets.match_gpu("GeForce GTX 1050", 4)
