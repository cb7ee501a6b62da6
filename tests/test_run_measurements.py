"""Estimates learn from the user's own runs (measured.json)."""

from __future__ import annotations

import pytest

from kohyagen.estimate import measurements
from kohyagen.estimate.measurements import Measurement, from_manifest, load, record
from kohyagen.estimate.plan import estimate
from kohyagen.run.manifest import Manifest


@pytest.fixture(autouse=True)
def _xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def finished_train(tmp_path, *, gpu="rtx4090", attempts=1, started="2026-01-01T10:00:00+00:00",
                   finished="2026-01-01T11:00:00+00:00") -> Manifest:  # fmt: skip
    m = Manifest.create(tmp_path / "run", inputs={})
    m.update("configs", gpu=gpu)
    est = estimate(model="sd15", gpu="rtx4090", images=50, epochs=10, batch_size=2)
    m.set("estimate", est.to_dict())
    m.data["stages"]["train"] = {"status": "done", "started": started, "finished": finished,
                                 "outputs": {"attempts": attempts}}  # fmt: skip
    m.save()
    return m


def test_measurement_from_a_clean_gpu_run(tmp_path):
    m = finished_train(tmp_path)
    got = from_manifest(m)
    assert got.gpu == "rtx4090" and got.model == "sd15" and got.resolution == 512
    assert got.images_seen == 50 * 10 * 10 and got.seconds == 3600
    overhead = m.data["estimate"]["overhead_minutes"]
    loading = 60 * sum(overhead) / 2
    assert got.seconds_per_image == pytest.approx((3600 - loading) / 5000)


def test_no_measurement_from_cpu_or_retried_runs(tmp_path):
    assert from_manifest(finished_train(tmp_path / "a", gpu="cpu")) is None
    assert from_manifest(finished_train(tmp_path / "b", attempts=2)) is None
    assert (
        from_manifest(finished_train(tmp_path / "c", finished="2026-01-01T10:00:00+00:00")) is None
    )


def test_estimate_prefers_measured_figures(tmp_path):
    published = estimate(model="sd15", gpu="rtx4090", images=20, epochs=10, batch_size=2)
    record(Measurement("rtx4090", "sd15", 512, 5000, 1000.0, 0.18, "t", "r1"))
    record(Measurement("rtx4090", "sd15", 512, 5000, 1200.0, 0.22, "t", "r2"))
    record(Measurement("rtx3090", "sd15", 512, 5000, 1200.0, 9.0, "t", "r3"))
    est = estimate(model="sd15", gpu="rtx4090", images=20, epochs=10, batch_size=2)
    seen = 20 * 10 * 10
    assert est.basis == "measured" and "15%" in est.certainty
    assert est.train_minutes == pytest.approx((seen * 0.18 / 60, seen * 0.22 / 60))
    assert est.overhead_minutes == published.overhead_minutes
    assert any("2 of your runs" in s for s in est.sources)
    # at twice the side, four times the time per image
    big = estimate(model="sd15", gpu="rtx4090", images=20, epochs=10, batch_size=2, resolution=1024)
    assert big.train_minutes[0] == pytest.approx(4 * est.train_minutes[0])
    # other GPUs and models keep the published figures
    assert estimate(model="sdxl", gpu="rtx4090", images=20).basis == "published"
    off = estimate(
        model="sd15", gpu="rtx4090", images=20, epochs=10, batch_size=2, use_measured=False
    )
    assert off.train_minutes == published.train_minutes


def test_record_keeps_the_latest_and_survives_a_corrupt_file(tmp_path):
    path = measurements.measurements_path()
    path.parent.mkdir(parents=True)
    path.write_text("{broken")
    assert load() == []
    for i in range(measurements.KEEP + 5):
        record(Measurement("rtx4090", "sd15", 512, 100, 10.0, 0.1, str(i), "r"))
    record(Measurement("a100-40", "sd15", 512, 100, 10.0, 0.1, "x", "r"))
    kept = load()
    mine = [m for m in kept if m.gpu == "rtx4090"]
    assert len(mine) == measurements.KEEP and mine[-1].when == str(measurements.KEEP + 4)
    assert any(m.gpu == "a100-40" for m in kept)


def test_pipeline_records_after_training(monkeypatch, tmp_path):
    from kohyagen.run.pipeline import run_pipeline
    from tests.conftest import make_image
    from tests.test_run_pipeline import FakeStages, options

    images = tmp_path / "images"
    make_image(images / "a.png")
    FakeStages(monkeypatch)
    seen = []

    def fake_from_manifest(manifest):
        seen.append(manifest.status("train"))
        return Measurement("rtx4090", "sd15", 512, 10, 5.0, 0.5, "t", str(manifest.run_dir))

    monkeypatch.setattr(measurements, "from_manifest", fake_from_manifest)
    run_pipeline(options(images, tmp_path))
    assert seen == ["done"]
    assert [m.run_dir for m in load()] == [str((tmp_path / "run").resolve())]
