"""Prices from SkyPilot's cached catalog: read without SkyPilot, used by the cloud plan.

The catalogs here are written in SkyPilot's own format (column names and orders of
sky/catalog/data_fetchers/fetch_runpod.py, fetch_vast.py and fetch_lambda_cloud.py in
0.14.1) into a fake home folder; the core environment has no SkyPilot at all.
tests/test_cloud_task.py checks, where SkyPilot is installed, that its own reader gets
the same price from the same file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kohyagen.cloud.catalog import (
    STALE_AFTER_S,
    catalog_dir,
    catalog_price,
    describe_age,
    load_catalogs,
    read_cloud,
)
from kohyagen.cloud.plan import check_budget, make_plan
from kohyagen.errors import BudgetExceeded
from tests.cloud_fixtures import _isolated, _no_api_server_left, prepare  # noqa: F401
from tests.sky_catalogs import (
    HOUR,
    LAMBDA_COLUMNS,
    RUNPOD,
    RUNPOD_COLUMNS,
    TABLE_PRICE,
    VAST,
    VAST_COLUMNS,
    gpu_info,
    runpod_row,
    write_catalog,
)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fake home folder, where SkyPilot keeps its catalogs when SKY_RUNTIME_DIR is unset."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.delenv("SKY_RUNTIME_DIR", raising=False)
    return folder


@pytest.fixture
def manifest(tmp_path):
    return prepare(tmp_path)


def test_the_plan_prices_from_the_catalog_and_says_so(home, manifest):
    write_catalog(home, "runpod", RUNPOD_COLUMNS, RUNPOD, age_s=3 * HOUR)
    plan = make_plan(manifest, cloud="runpod")
    first = plan.candidates[0]
    assert first.preset == "rtx4090"
    assert first.price_per_hour == pytest.approx(0.69)  # cheapest region, one GPU
    assert first.price_source == "SkyPilot catalog (runpod, on-demand), cached 3 h ago"
    assert first.cost[1] == pytest.approx(first.minutes[1] / 60 * 0.69)
    for c in plan.candidates[1:]:
        if c.preset == "rtx3090":  # listed too
            assert c.price_per_hour == pytest.approx(0.46)
        else:  # a GPU the cached file does not list keeps kohyagen's table or typical price
            assert "SkyPilot" not in c.price_source
    assert plan.to_dict()["candidates"][0]["price_source"] == first.price_source


def test_without_a_cache_the_plan_is_as_before(home, manifest):
    first = make_plan(manifest, cloud="runpod").candidates[0]
    assert first.price_per_hour == pytest.approx(TABLE_PRICE)
    assert first.price_source == "RunPod (Secure Cloud) (published)"


def test_the_cheapest_cloud_of_the_plan_wins_and_only_those_it_may_rent_on(home, manifest):
    write_catalog(home, "runpod", RUNPOD_COLUMNS, RUNPOD)
    write_catalog(home, "vast", VAST_COLUMNS, VAST)
    first = make_plan(manifest).candidates[0]
    assert first.price_per_hour == pytest.approx(0.48)
    assert first.price_source.startswith("SkyPilot catalog (vast, on-demand)")
    # --cloud runpod: Vast's cheaper offer is not one SkyPilot may take
    assert make_plan(manifest, cloud="runpod").candidates[0].price_per_hour == pytest.approx(0.69)


def test_spot_takes_the_spot_price_or_else_the_on_demand_one(home, manifest):
    write_catalog(home, "runpod", RUNPOD_COLUMNS, RUNPOD)
    first = make_plan(manifest, cloud="runpod", spot=True).candidates[0]
    assert first.price_per_hour == pytest.approx(0.35)
    assert "(runpod, spot)" in first.price_source
    # no spot prices cached (as on Lambda, where SpotPrice is empty)
    no_spot = [runpod_row("RTX4090", 1, "CA", "CA-MTL-1", 0.74, None)]
    write_catalog(home, "runpod", RUNPOD_COLUMNS, no_spot)
    first = make_plan(manifest, cloud="runpod", spot=True).candidates[0]
    assert first.price_per_hour == pytest.approx(0.74)
    assert "(runpod, on-demand)" in first.price_source


def test_an_old_cache_is_used_and_called_old(home, manifest):
    write_catalog(home, "runpod", RUNPOD_COLUMNS, RUNPOD, age_s=9 * 24 * HOUR)
    first = make_plan(manifest, cloud="runpod").candidates[0]
    assert first.price_per_hour == pytest.approx(0.69)
    assert "cached 9 days ago; old, prices may have changed" in first.price_source


def test_the_budget_guard_holds_the_catalog_price(home, manifest):
    table_plan = make_plan(manifest, cloud="runpod")
    dear = [runpod_row("RTX4090", 1, "CA", "CA-MTL-1", 5.00, 2.00)]
    write_catalog(home, "runpod", RUNPOD_COLUMNS, dear)
    budget = table_plan.cost[1] * 2  # enough at the table's $0.59, not at $5
    with pytest.raises(BudgetExceeded, match=r"\$5.00/hour"):
        check_budget(make_plan(manifest, cloud="runpod", budget=budget))
    # --max-price-per-hour compares the same price: the $5 card is left out, or named
    capped = make_plan(manifest, cloud="runpod", max_price_per_hour=1.0)
    assert "rtx4090" not in [c.preset for c in capped.candidates]
    with pytest.raises(BudgetExceeded, match=r"rtx4090 is \$5.00, SkyPilot catalog"):
        make_plan(manifest, cloud="runpod", max_price_per_hour=0.1)


def test_lambda_s_empty_spot_column_and_its_own_column_order(home):
    rows = [["gpu_1x_a100_sxm4", "A100", 1.0, 30.0, 200.0, 1.29, "us-east-1",
             gpu_info("A100", 1, 40960), ""]]  # fmt: skip
    write_catalog(home, "lambda", LAMBDA_COLUMNS, rows)
    prices = read_cloud("lambda", catalog_dir())
    assert prices is not None
    assert prices.on_demand == {"A100": 1.29} and prices.spot == {}


def test_names_match_without_case_and_counts_within_a_hundredth(home):
    rows = [
        runpod_row("rtx4090", 1, "CA", "CA-MTL-1", 0.7, None),
        runpod_row("RTX4090", 2, "CA", "CA-MTL-1", 0.5, None),  # cheaper, but two GPUs
        runpod_row("RTX4090", 1, "CA", "CA-MTL-1", 0.4, None),
    ]
    rows[0][2] = "1.001"
    rows[2][2] = "1.5"  # a fraction of a count is no single GPU either
    write_catalog(home, "runpod", RUNPOD_COLUMNS, rows)
    found = catalog_price(load_catalogs(["runpod"]), [("RTX4090", "runpod")])
    assert found is not None and found.price == pytest.approx(0.7)


BAD_PRICES = ["nan", "NaN", "-0.5", "0", "inf", "", "free", "1e400"]


@pytest.mark.parametrize("bad", BAD_PRICES)
def test_a_row_without_a_sensible_price_is_skipped_not_the_file(home, bad):
    rows = [
        runpod_row("RTX4090", 1, "CA", "CA-MTL-1", bad, bad),
        runpod_row("RTX4090", 1, "CZ", "EU-CZ-1", 0.9, 0.5),
    ]
    write_catalog(home, "runpod", RUNPOD_COLUMNS, rows)
    prices = read_cloud("runpod", catalog_dir())
    assert prices is not None
    assert prices.on_demand == {"RTX4090": 0.9} and prices.spot == {"RTX4090": 0.5}


def _hostile(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)  # open() would wait for a writer forever
    elif kind == "folder":
        path.mkdir()
    elif kind == "device":
        path.symlink_to("/dev/zero")  # a read that never ends
    elif kind == "dangling link":
        path.symlink_to(path.parent / "gone.csv")
    else:
        path.write_bytes(
            {
                "empty": b"",
                "header only": b"InstanceType,AcceleratorName,AcceleratorCount,Price\n",
                "other columns": b"Name,Count,Cost\nRTX4090,1,0.1\n",
                "not utf-8": b"\xff\xfe\x00garbage\x9c\n" * 100,
                "binary": os.urandom(4096),
                "huge field": b'AcceleratorName,AcceleratorCount,Price\n"' + b"x" * 200_000,
                "truncated": b"AcceleratorName,AcceleratorCount,Price\nRTX4090,1\nRTX4090",
                "nul bytes": b"AcceleratorName,AcceleratorCount,Price\nRTX\x004090,1,0.1\n",
            }[kind]
        )


HOSTILE = ["fifo", "folder", "device", "dangling link", "empty", "header only",
           "other columns", "not utf-8", "binary", "huge field", "truncated", "nul bytes"]  # fmt: skip


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_catalog_gives_no_price_and_no_crash(home, manifest, kind):
    _hostile(home / ".sky" / "catalogs" / "v8" / "runpod" / "vms.csv", kind)
    prices = read_cloud("runpod", catalog_dir())
    assert prices is None or "RTX4090" not in prices.on_demand
    first = make_plan(manifest, cloud="runpod").candidates[0]
    assert first.price_per_hour == pytest.approx(TABLE_PRICE)
    assert "SkyPilot" not in first.price_source


def test_a_missing_catalog_folder_or_home_gives_nothing(home, monkeypatch):
    assert load_catalogs(["runpod", "vast"]) == {}
    monkeypatch.delenv("HOME")
    monkeypatch.setattr(Path, "home", lambda: (_ for _ in ()).throw(RuntimeError("no home")))
    assert load_catalogs(["runpod"]) == {}


def test_sky_runtime_dir_is_where_skypilot_looks_first(tmp_path, home, monkeypatch):
    assert catalog_dir() == home / ".sky" / "catalogs" / "v8"
    monkeypatch.setenv("SKY_RUNTIME_DIR", str(tmp_path / "runtime"))
    assert catalog_dir() == tmp_path / "runtime" / ".sky" / "catalogs" / "v8"
    write_catalog(tmp_path / "runtime", "runpod", RUNPOD_COLUMNS, RUNPOD)
    assert load_catalogs(["runpod"])["runpod"].on_demand["RTX4090"] == pytest.approx(0.69)


def test_ages_read_as_a_person_says_them():
    assert describe_age(-50) == "just now"  # a file from the future: a skewed clock
    assert describe_age(20) == "just now"
    assert describe_age(25 * 60) == "25 min ago"
    assert describe_age(3 * HOUR) == "3 h ago"
    assert describe_age(9 * 24 * HOUR) == "9 days ago"


def test_stale_means_older_than_a_week(home):
    write_catalog(home, "runpod", RUNPOD_COLUMNS, RUNPOD, age_s=STALE_AFTER_S - HOUR)
    fresh = catalog_price(load_catalogs(["runpod"]), [("RTX4090", "runpod")])
    assert fresh is not None and not fresh.stale and "old" not in fresh.source
    write_catalog(home, "runpod", RUNPOD_COLUMNS, RUNPOD, age_s=STALE_AFTER_S + HOUR)
    old = catalog_price(load_catalogs(["runpod"]), [("RTX4090", "runpod")])
    assert old is not None and old.stale
