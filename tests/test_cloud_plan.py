"""The cloud plan: which GPUs may run a prepared run, what they cost, and the guard."""

from __future__ import annotations

import math

import pytest

from kohyagen.cloud.gpus import SKY_GPUS, offers
from kohyagen.cloud.plan import (
    ALTERNATIVE_COST_FACTOR,
    check_amount,
    check_budget,
    cluster_name,
    fitting_presets,
    make_plan,
)
from kohyagen.config.presets import fit_params, get_gpu
from kohyagen.errors import BudgetExceeded, PresetError, RunStateError, UsageError
from tests.cloud_fixtures import _isolated, _no_api_server_left, prepare  # noqa: F401


@pytest.fixture
def manifest(tmp_path):
    return prepare(tmp_path)


def test_alternatives_fit_the_memory_and_precision_the_configs_use(manifest):
    need, presets = fitting_presets(manifest)
    assert presets[0] == "rtx4090"
    assert manifest.data["configs"]["resolved"]["mixed_precision"] == "bf16"
    usable = fit_params().usable_fraction
    for name in presets:
        gpu = get_gpu(name)
        assert gpu.vram_gb * usable >= need and gpu.bf16
    # T4 and V100 have 16 GB and no bf16: the rtx4090 configs (batch 6, bf16) cannot run there
    assert "t4" not in presets and "v100" not in presets
    assert {"rtx3090", "a100-80", "h100"} <= set(presets)


def test_a_smaller_card_is_offered_when_the_run_needs_little(tmp_path):
    manifest = prepare(tmp_path, gpu="t4")
    need, presets = fitting_presets(manifest)
    assert presets[0] == "t4"
    assert need <= 16 * fit_params().usable_fraction
    assert "v100" in presets  # 16 GB, fp16 configs: fits


def test_plan_prices_every_candidate_and_drops_the_dear_slow_ones(manifest):
    plan = make_plan(manifest)
    first = plan.candidates[0]
    assert first.preset == "rtx4090"
    assert first.price_per_hour == pytest.approx(0.59)  # RunPod's price in providers.toml
    assert ("RTX4090", "runpod") in first.offers and ("RTX4090", "vast") in first.offers
    for c in plan.candidates:
        assert c.cost[0] <= c.cost[1]
        assert c.cost[1] == pytest.approx(c.minutes[1] / 60 * c.price_per_hour)
        assert c.cost[1] <= first.cost[1] * ALTERNATIVE_COST_FACTOR
    assert plan.cost == (
        min(c.cost[0] for c in plan.candidates),
        max(c.cost[1] for c in plan.candidates),
    )
    assert plan.cluster == cluster_name("anna", manifest.run_dir)


def test_a_cloud_restricts_the_offers_and_never_names_primeintellect(manifest):
    plan = make_plan(manifest, cloud="runpod")
    assert all(cloud == "runpod" for c in plan.candidates for _, cloud in c.offers)
    for gpu in SKY_GPUS:
        assert "primeintellect" not in gpu.clouds
    with pytest.raises(PresetError, match="not offered on lambda"):
        make_plan(manifest, cloud="lambda")  # no RTX 4090 on Lambda
    with pytest.raises(UsageError, match="unknown cloud"):
        make_plan(manifest, cloud="myhost")


def test_a_preset_with_two_names_is_asked_for_by_each(manifest):
    assert ("A6000", "lambda") in offers("a6000", "any")
    assert ("RTXA6000", "runpod") in offers("a6000", "any")
    assert offers("a6000", "lambda") == [("A6000", "lambda")]


def test_max_price_per_hour_drops_dearer_gpus_or_refuses(manifest):
    plan = make_plan(manifest, max_price_per_hour=0.6)
    assert plan.candidates and all(c.price_per_hour <= 0.6 for c in plan.candidates)
    with pytest.raises(BudgetExceeded, match=r"at most \$0.10/hour"):
        make_plan(manifest, max_price_per_hour=0.1)


def test_the_guard_refuses_above_the_budget_and_passes_below(manifest):
    plan = make_plan(manifest, budget=0.01)
    with pytest.raises(BudgetExceeded) as info:
        check_budget(plan)
    assert "nothing was rented" in str(info.value) and "$0.01" in str(info.value)
    check_budget(make_plan(manifest, budget=plan.cost[1] + 0.01))
    check_budget(make_plan(manifest))  # no budget: no refusal


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, -0.01])
def test_nan_infinite_and_negative_amounts_are_usage_errors(manifest, value):
    with pytest.raises(UsageError):
        check_amount(value, "--budget")
    with pytest.raises(UsageError):
        make_plan(manifest, budget=value)
    with pytest.raises(UsageError):
        make_plan(manifest, max_price_per_hour=value)


def test_a_run_not_prepared_to_its_estimate_is_refused(tmp_path):
    from kohyagen.run.manifest import Manifest

    manifest = Manifest.create(tmp_path / "run", inputs={"name": "x", "model": "sd15"})
    with pytest.raises(RunStateError, match="not been prepared"):
        make_plan(manifest)


def test_cluster_names_are_valid_stable_and_distinct(tmp_path):
    import re

    a = cluster_name("My LoRA_v2!", tmp_path / "a")
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", a)
    assert a == cluster_name("My LoRA_v2!", tmp_path / "a")
    assert a != cluster_name("My LoRA_v2!", tmp_path / "b")
