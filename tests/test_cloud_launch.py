"""Launch, results copy and teardown, driven through a recorded fake of the SkyPilot seam
(kohyagen.cloud.sky_api.SkyApi): the cluster goes down on every way out."""

from __future__ import annotations

import pytest

from kohyagen.cloud.launch import NOT_COPIED, launch_run
from kohyagen.cloud.plan import make_plan
from kohyagen.cloud.records import cloud_status, recorded, take_down
from kohyagen.cloud.task import build_task
from kohyagen.errors import KohyagenError, TrainingFailed, UsageError
from kohyagen.run.manifest import Manifest
from tests.cloud_fixtures import (  # noqa: F401
    FakeSkyApi,
    _isolated,
    _no_api_server_left,
    prepare,
)


@pytest.fixture
def planned(tmp_path):
    manifest = prepare(tmp_path)
    plan = make_plan(manifest)
    return plan, build_task(plan, manifest.data["inputs"])


def _api(tmp_path, **kw) -> FakeSkyApi:
    node = tmp_path / "node" / "root"
    node.mkdir(parents=True)
    return FakeSkyApi(node, **kw)


def test_success_copies_the_results_back_with_local_paths_and_downs(tmp_path, planned):
    plan, task = planned
    api = _api(tmp_path)
    lines: list[str] = []
    outcome = launch_run(plan, task, api, progress=lines.append)
    assert api.names() == ["launch", "tail_logs", "copy_down", "down"]
    assert api.calls[0] == ("launch", plan.cluster, plan.idle_minutes)
    assert api.calls[2][2] == "sky_workdir" and api.calls[2][4] == tuple(NOT_COPIED)
    assert outcome.lora == plan.run_dir / "output" / "anna.safetensors"
    assert outcome.lora.read_bytes() == b"lora"
    manifest = Manifest.load(plan.run_dir)
    assert manifest.is_finished("pick") and manifest.data["run_dir"] == str(plan.run_dir)
    assert "node" not in manifest.outputs("pick")["lora"]  # the node's paths were rewritten
    assert recorded(manifest)["status"] == "down" and recorded(manifest)["job_id"] == 7
    assert api.live == []
    assert any("is down" in line for line in lines)


def test_a_failed_training_brings_its_log_back_downs_and_raises(tmp_path, planned):
    plan, task = planned
    api = _api(tmp_path, exit_code=100)
    with pytest.raises(TrainingFailed, match="exit code 100"):
        launch_run(plan, task, api)
    assert api.names() == ["launch", "tail_logs", "copy_down", "down"]
    assert (plan.run_dir / "train.log").is_file()
    assert recorded(Manifest.load(plan.run_dir))["status"] == "down"


@pytest.mark.parametrize("where", ["launch", "tail_logs", "copy_down"])
@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_an_exception_or_ctrl_c_anywhere_still_downs(tmp_path, planned, where, error):
    plan, task = planned
    api = _api(tmp_path, raise_in={where: error})
    with pytest.raises(type(error)):
        launch_run(plan, task, api)
    assert api.names()[-1] == "down"
    assert api.names().count("down") == 1
    assert recorded(Manifest.load(plan.run_dir))["status"] == "down"


def test_the_cluster_is_recorded_before_launch(tmp_path, planned):
    plan, task = planned
    seen = {}

    class Watching(FakeSkyApi):
        def launch(self, task, cluster, *, idle_minutes):
            seen.update(recorded(Manifest.load(plan.run_dir)))
            raise KeyboardInterrupt  # killed mid-launch: the name is already on disk

    api = Watching(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        launch_run(plan, task, api)
    assert seen["cluster"] == plan.cluster and seen["status"] == "launching"


def test_a_failed_down_says_how_to_end_the_billing(tmp_path, planned):
    plan, task = planned
    api = _api(tmp_path, raise_in={"down": ConnectionError("API server gone")})
    with pytest.raises(KohyagenError) as info:
        launch_run(plan, task, api)
    assert f"kohyagen cloud down {plan.cluster}" in str(info.value)
    assert recorded(Manifest.load(plan.run_dir))["status"] == "down_failed"


def test_status_and_down_find_recorded_clusters(tmp_path, planned):
    plan, task = planned
    api = _api(tmp_path, raise_in={"tail_logs": KeyboardInterrupt()})

    def keep_it(cluster):  # as if the down never came: the cluster stays up
        api.calls.append(("down", cluster))
        raise ConnectionError("no network")

    api.down = keep_it
    with pytest.raises(KeyboardInterrupt):
        launch_run(plan, task, api)
    roots = [tmp_path / "runs"]
    rows = cloud_status(api, roots)
    assert [(r.cluster, r.recorded, r.live) for r in rows] == [(plan.cluster, "down_failed", "UP")]
    del api.down  # the fake's own down again
    assert take_down(api, ["anna"], roots) == [(plan.cluster, True)]
    assert recorded(Manifest.load(plan.run_dir))["status"] == "down"
    assert cloud_status(api, roots)[0].live is None
    assert take_down(api, [], roots) == []  # nothing up any more
    with pytest.raises(UsageError, match="no cluster recorded"):
        take_down(api, ["nobody"], roots)


def test_status_lists_kohyagen_clusters_no_run_folder_records(tmp_path):
    from kohyagen.cloud.sky_api import ClusterInfo

    api = _api(tmp_path)
    api.live = [
        ClusterInfo("kohyagen-old-abc123", "UP", "1x L4", 10, True),
        ClusterInfo("someone-else", "UP", "1x H100", None, False),
    ]
    rows = cloud_status(api, [tmp_path / "runs"])
    assert [(r.cluster, r.run_dir) for r in rows] == [("kohyagen-old-abc123", None)]


def test_results_that_cannot_be_copied_are_reported_after_the_down(tmp_path, planned):
    plan, task = planned
    api = _api(tmp_path, raise_in={"copy_down": KohyagenError("rsync exit 12")})
    with pytest.raises(KohyagenError, match="could not be copied back: rsync exit 12"):
        launch_run(plan, task, api)
    assert api.names() == ["launch", "tail_logs", "copy_down", "down"]


def test_status_points_a_submitted_managed_job_to_fetch(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from kohyagen.cli import main
    from kohyagen.cloud import sky_api
    from kohyagen.cloud.records import note
    from tests.cloud_fixtures import prepare

    manifest = prepare(tmp_path)
    note(manifest, cluster="kohyagen-anna-1a2b", managed=True, bucket="s3://b/k",
         status="submitted")  # fmt: skip
    monkeypatch.setattr(sky_api, "default_api", lambda: _api(tmp_path))
    # the fake stands in for SkyPilot, so the command need not find it installed
    monkeypatch.setattr("kohyagen.cli.cloud_manage_cmd.need_sky", lambda: None)
    result = CliRunner().invoke(main, ["cloud", "status", "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "kohyagen cloud fetch" in result.output
    note(manifest, status="fetched")
    result = CliRunner().invoke(main, ["cloud", "status", "--runs", str(tmp_path / "runs")])
    assert "kohyagen cloud fetch" not in result.output
