"""kohyagen estimate: steps, time, VRAM fit and cost, from the figures in templates/."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from kohyagen.cli import main
from kohyagen.errors import ConfigError
from kohyagen.estimate.dataset_counts import count_dataset
from kohyagen.estimate.plan import (
    estimate,
    load_prices,
    memory_needed,
    provider_data,
    throughput_data,
)
from tests.conftest import make_image


@pytest.fixture(autouse=True)
def _no_user_prices(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def test_acceptance_numbers_follow_the_formula_and_the_published_figures():
    # the published workload itself: SDXL LoRA, 1024 px, batch 1 on an RTX 4090
    est = estimate(model="sdxl", gpu="rtx4090", images=50, epochs=10, batch_size=1)
    assert est.steps == 50 * 10 * 10
    published = throughput_data()["gpus"]["rtx4090"]["seconds"]
    assert est.train_minutes == pytest.approx(tuple(s * est.steps / 60 for s in published))
    assert "kohya_ss/issues/1288" in throughput_data()["sources"]["kohya_ss_1288"]["where"]
    assert est.total_minutes[0] > est.train_minutes[0]
    assert est.basis == "published" and "30%" in est.certainty
    by_provider = {c.provider: c for c in est.costs}
    assert set(by_provider) == {"vastai", "runpod", "gpuflow"}
    for cost in est.costs:
        price = provider_data()["providers"][cost.provider]["prices"]["rtx4090"]
        setup = cost.setup_minutes
        assert cost.cost[0] == pytest.approx((est.total_minutes[0] + setup[0]) / 60 * price[0])
        assert cost.cost[1] == pytest.approx((est.total_minutes[1] + setup[1]) / 60 * price[1])
    assert est.budget_cost == min(c.cost[1] for c in est.costs)


def test_sd15_on_a_4090_is_about_a_second_a_step_not_five():
    """Issue 12: the guide's figures made this 61-90 minutes for 840 steps (~5 s a step)."""
    est = estimate(model="sd15", gpu="rtx4090", images=50, epochs=10, batch_size=6)
    assert est.steps == 840
    per_step = (est.train_minutes[0] * 60 / est.steps, est.train_minutes[1] * 60 / est.steps)
    assert 0.3 < per_step[0] < per_step[1] < 2.0
    assert est.basis == "derived" and "50%" in est.certainty  # sd15's factor is derived


def test_time_follows_steps_batch_and_checkpointing():
    from kohyagen.config.presets import fit_params

    fit = fit_params()
    base = estimate(model="sd15", gpu="rtx4090", images=50, epochs=10, batch_size=2)
    double = estimate(model="sd15", gpu="rtx4090", images=50, epochs=20, batch_size=2)
    bigger_batch = estimate(model="sd15", gpu="rtx4090", images=50, epochs=10, batch_size=4)
    gc = estimate(model="sd15", gpu="rtx4090", images=50, epochs=10, batch_size=2,
                  gradient_checkpointing=True)  # fmt: skip
    assert double.train_minutes[0] == pytest.approx(2 * base.train_minutes[0])
    assert bigger_batch.steps == base.steps // 2
    step = lambda b: fit.step_overhead + b * (1 - fit.step_overhead)  # noqa: E731
    ratio = (step(4) / 2) / step(2)  # half the steps, each a bigger batch
    assert bigger_batch.train_minutes[0] == pytest.approx(base.train_minutes[0] * ratio)
    assert bigger_batch.train_minutes[0] < base.train_minutes[0]  # cheaper per image
    assert gc.train_minutes[0] == pytest.approx(base.train_minutes[0] * fit.gc_slowdown)
    assert bigger_batch.memory_gb > base.memory_gb


def test_faster_gpu_and_larger_model_relations():
    kw = {"images": 40, "epochs": 8, "batch_size": 1}
    t4090 = estimate(model="sd15", gpu="rtx4090", **kw).train_minutes
    t3090 = estimate(model="sd15", gpu="rtx3090", **kw).train_minutes
    ta100 = estimate(model="sd15", gpu="a100", **kw).train_minutes
    assert ta100[1] < t4090[1] < t3090[1]
    sdxl = estimate(model="sdxl", gpu="rtx4090", **kw).train_minutes
    factor = throughput_data()["models"]["sd15"]["time_factor"]
    assert t4090 == pytest.approx((sdxl[0] * factor[0], sdxl[1] * factor[1]))
    half_res = estimate(model="sdxl", gpu="rtx4090", resolution=512, **kw).train_minutes
    assert half_res[0] == pytest.approx(sdxl[0] / 4)


@pytest.mark.parametrize("model", ["flux", "sd3"])
@pytest.mark.parametrize("gpu", ["rtx3060-12", "rtx3090", "rtx4090", "a100-40", "h100"])
def test_flux_and_sd35_have_figures_on_common_gpus(model, gpu):
    from kohyagen.config.family_settings import dit_plan
    from kohyagen.config.presets import get_gpu, get_model

    plan = dit_plan(get_model(model), get_gpu(gpu))
    est = estimate(model=model, gpu=gpu, images=20, epochs=10, batch_size=plan.batch_size,
                   optimizer=plan.optimizer)  # fmt: skip
    assert est.fits == "yes" and est.memory_gb == pytest.approx(plan.need_gb, abs=0.2)
    assert est.basis == "derived" and "50%" in est.certainty
    assert any(s.startswith(f"model {model}:") and "B parameters" in s for s in est.sources)
    sdxl = estimate(model="sdxl", gpu=gpu, images=20, epochs=10, batch_size=plan.batch_size)
    assert est.train_minutes[0] > sdxl.train_minutes[0]  # a bigger model is slower


def test_derived_gpu_says_so_and_cites_its_base():
    est = estimate(model="sdxl", gpu="rtx3060", images=30, epochs=10)
    assert est.basis == "derived" and "50%" in est.certainty
    assert any(s.startswith("rtx3090:") for s in est.sources)
    # rtx3060 is the 3090 figure times its factor
    f = throughput_data()["gpus"]["rtx3060-12"]["factor"]
    ref = estimate(model="sdxl", gpu="rtx3090", images=30, epochs=10)
    assert est.train_minutes[1] == pytest.approx(ref.train_minutes[1] * f[1])


def test_vram_fit_levels_follow_the_presets_memory_model():
    from kohyagen.config.presets import fit_params, get_gpu, get_model
    from kohyagen.config.training_plan import memory_need

    kw = {"model": "sdxl", "gpu": "rtx4090", "images": 10}
    small = estimate(batch_size=1, gradient_checkpointing=True, unet_only=True, **kw)
    big = estimate(batch_size=4, **kw)
    assert small.fits == "yes" and big.fits == "no"
    assert any("gradient_checkpointing" in n for n in big.notes)
    need = memory_need(get_model("sdxl"), batch_size=4, gradient_checkpointing=False)
    assert big.memory_gb == pytest.approx(need, abs=0.1)
    assert (
        big.memory_gb > get_gpu("rtx4090").vram_gb >= small.memory_gb / fit_params().usable_fraction
    )
    ckpt = memory_needed("sdxl", batch_size=4, resolution=1024, gradient_checkpointing=True)
    assert ckpt < memory_needed("sdxl", batch_size=4, resolution=1024)
    # half the side, a quarter of the per-sample memory
    full = memory_needed("sd15", batch_size=2, resolution=512)
    half = memory_needed("sd15", batch_size=2, resolution=256)
    base = memory_needed("sd15", batch_size=0, resolution=512)
    assert half - base == pytest.approx((full - base) / 4, abs=0.1)


def test_gradient_accumulation_and_bucket_steps():
    est = estimate(
        model="sd15", gpu="rtx4090", images=10, images_x_repeats=33, epochs=3, batch_size=4,
        gradient_accumulation_steps=2,
    )  # fmt: skip
    assert est.steps_per_epoch == math.ceil(math.ceil(33 / 4) / 2)
    assert est.steps == est.steps_per_epoch * 3
    bucketed = estimate(
        model="sd15", gpu="rtx4090", images=10, images_x_repeats=33, steps_per_epoch=11, epochs=3,
        batch_size=4,
    )  # fmt: skip
    assert bucketed.steps == 33


def test_user_prices_replace_and_extend(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[providers.runpod]\nlabel = "RunPod community"\nprices = { rtx4090 = 0.34 }\n'
        '[providers.home]\nlabel = "Home"\nsetup_minutes = 0\n'
        "prices = { rtx4090 = [0.10, 0.20], a100 = 1.0 }\n"
    )
    table = load_prices(prices)
    assert table["runpod"]["prices"]["rtx4090"] == (0.34, 0.34)
    assert table["runpod"]["user"] and "vastai" in table
    est = estimate(model="sd15", gpu="rtx4090", images=50, prices=table)
    home = next(c for c in est.costs if c.provider == "home")
    assert home.basis == "user"
    assert home.cost[1] == pytest.approx(est.total_minutes[1] / 60 * 0.20)


def test_user_prices_default_location(tmp_path, monkeypatch):
    cfg = tmp_path / "xdg" / "kohyagen"
    cfg.mkdir(parents=True)
    (cfg / "prices.toml").write_text("[providers.mine]\nprices = { rtx4090 = 0.3 }\n")
    assert "mine" in load_prices()


@pytest.mark.parametrize(
    "text",
    [
        "[providers.x]\nprices = { rtx4090 = [0.9, 0.1] }\n",
        "[providers.x]\nprices = { rtx4090 = 'cheap' }\n",
        "[providers.x]\nlabel = 'no prices'\n",
        "[other]\n",
        "[providers.x\n",
    ],
)
def test_bad_prices_file_names_the_file(tmp_path, text):
    prices = tmp_path / "prices.toml"
    prices.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_prices(prices)
    assert info.value.path == prices


def test_other_gpu_price_is_scaled_and_marked():
    est = estimate(model="sd15", gpu="rtx3090", images=50)
    rates = provider_data()["typical_rates"]
    vast = next(c for c in est.costs if c.provider == "vastai")
    assert vast.basis == "scaled"
    assert vast.price_per_hour[0] == pytest.approx(0.35 * rates["rtx3090"] / rates["rtx4090"])


def test_cpu_has_no_time_but_still_counts_steps():
    est = estimate(model="sd15", gpu="cpu", images=5, epochs=2, batch_size=1)
    assert est.steps == 5 * 10 * 2
    assert est.total_minutes is None and est.costs == () and est.budget_cost is None


def test_own_price_sets_budget_cost():
    est = estimate(model="sd15", gpu="rtx4090", images=50, own_price_per_hour=2.0)
    assert est.budget_cost == pytest.approx(est.total_minutes[1] / 60 * 2.0)


def test_every_gpu_entry_resolves_to_published_figures():
    data = throughput_data()
    for key in data["gpus"]:
        est = estimate(model="sd15", gpu=key, images=10)
        assert est.train_minutes[0] <= est.train_minutes[1]
        assert est.sources


def test_cli_acceptance_prints_steps_time_and_providers():
    result = CliRunner().invoke(
        main,
        ["estimate", "--images", "50", "--model", "sd15", "--epochs", "10", "--gpu", "rtx4090"],
    )
    assert result.exit_code == 0, result.output
    out = result.output
    from kohyagen.config.training_plan import training_settings

    batch = training_settings("sd15", "rtx4090")["train_batch_size"].value
    per_epoch = math.ceil(50 * 10 / batch)  # 50 images x 10 repeats (the default)
    assert f"steps: {per_epoch * 10} ({per_epoch} per epoch)" in out
    assert f"batch {batch}" in out
    for label in ("Vast.ai", "RunPod", "GPUFlow"):
        assert label in out
    assert "time:" in out and "certainty" in out and "$" in out


def test_cli_json_and_dataset(tmp_path):
    for i in range(4):
        make_image(tmp_path / "data" / "5_sks" / f"{i}.png")
    result = CliRunner().invoke(
        main,
        # --epochs: without it the epochs are what `kohyagen config` would choose (issue 15)
        ["estimate", str(tmp_path / "data"), "--gpu", "rtx3090", "--batch-size", "2", "--json",
         "--epochs", "10"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["images"] == 4 and data["images_x_repeats"] == 20
    assert data["steps"] == 10 * 10
    assert [c["provider"] for c in data["costs"]]


def test_count_plain_folder_uses_repeats(tmp_path):
    from kohyagen.dataset.prepare import auto_repeats

    for i in range(3):
        make_image(tmp_path / f"{i}.jpg")
    counts = count_dataset(tmp_path, repeats=4)
    assert (counts.images, counts.images_x_repeats, counts.kind) == (3, 12, "image_folder")
    # without --repeats: what `kohyagen run` (prepare's auto repeats) would use
    assert count_dataset(tmp_path).images_x_repeats == 3 * auto_repeats(3)


def test_cli_usage_errors(tmp_path):
    result = CliRunner().invoke(main, ["estimate", "--gpu", "rtx4090"])
    assert result.exit_code == 2 and "--images" in result.output
    result = CliRunner().invoke(main, ["estimate", "--images", "5", "--gpu", "nosuchgpu"])
    assert result.exit_code == 1 and "nosuchgpu" in result.output


def test_documented_prices_example_loads(tmp_path):
    from kohyagen.cli.estimate_cmd import _PRICES_EPILOG

    lines = _PRICES_EPILOG.splitlines()
    example = [line.strip() for line in lines if line.startswith("  ")]
    path = tmp_path / "prices.toml"
    path.write_text("\n".join(example) + "\n")
    table = load_prices(path)
    assert table["myhost"]["prices"] == {"rtx4090": (0.42, 0.42), "a100-40": (1.10, 1.40)}
    est = estimate(model="sd15", gpu="a100", images=10, prices=table)
    assert any(c.provider == "myhost" and c.basis == "user" for c in est.costs)


def test_estimate_of_an_empty_or_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "missing"):
        result = CliRunner().invoke(main, ["estimate", str(target), "--gpu", "rtx4090"])
        assert result.exit_code == 1, result.output
        assert str(target) in result.output and "Traceback" not in result.output
