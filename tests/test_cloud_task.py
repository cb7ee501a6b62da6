"""The SkyPilot task, checked by SkyPilot's own loader; the dry run; the SDK seam.

Needs the [cloud] extra (CI installs it in a second environment, see .ci/run). No test
here contacts a cloud or starts SkyPilot's API server (checked after the module).
"""

from __future__ import annotations

import copy
import os
import socket

import pytest

sky = pytest.importorskip("sky")

from click.testing import CliRunner  # noqa: E402

from kohyagen.cli import main  # noqa: E402
from kohyagen.cloud import sky_api  # noqa: E402
from kohyagen.cloud.jobs import managed_task, submit_jobs  # noqa: E402
from kohyagen.cloud.plan import make_plan  # noqa: E402
from kohyagen.cloud.task import REMOTE_IMAGES, build_task, task_yaml  # noqa: E402
from kohyagen.errors import KohyagenError, UsageError  # noqa: E402
from tests.cloud_fixtures import (  # noqa: E402, F401
    _isolated,
    _no_api_server_left,
    make_images,
    prepare,
    sky_server_pids,
)


def load(task: dict):
    """SkyPilot's loader on a copy (it empties the dict it is given); the copy must be
    left untouched for the test's own checks."""
    kept = copy.deepcopy(task)
    loaded = sky.Task.from_yaml_config(copy.deepcopy(task))
    assert task == kept
    return loaded


@pytest.mark.parametrize(
    ("cloud", "spot", "max_price", "backend"),
    [("any", False, None, "auto"), ("runpod", True, 0.7, "kohya"), ("vast", False, 2.0, "builtin")],
)
def test_every_task_loads_with_the_alternatives_and_autodown(
    tmp_path, cloud, spot, max_price, backend
):
    manifest = prepare(tmp_path, backend=backend)
    plan = make_plan(manifest, cloud=cloud, spot=spot, max_price_per_hour=max_price)
    task = build_task(plan, manifest.data["inputs"])
    loaded = load(task)
    resources = list(loaded.resources)
    wanted = {(a, c) for cand in plan.candidates for a, c in cand.offers}
    got = {(next(iter(r.accelerators)), str(r.cloud).lower()) for r in resources}
    assert got == wanted and len(resources) == len(wanted) > 1
    for r in resources:
        assert r.autostop_config.enabled and r.autostop_config.down
        assert r.autostop_config.idle_minutes == plan.idle_minutes
        assert r.use_spot is spot and r.disk_size == plan.disk_gb
        if max_price is not None:
            assert r.max_hourly_cost == max_price
    assert loaded.workdir == str(plan.run_dir)
    assert loaded.file_mounts[REMOTE_IMAGES] == manifest.data["inputs"]["images"]
    assert "kohyagen run" in loaded.run and "--run-dir ." in loaded.run
    assert ("sd-scripts" in loaded.setup) is (backend != "builtin")
    assert ("[train]" in loaded.setup) is (backend == "builtin")


def test_a_local_base_model_travels_as_a_file_mount(tmp_path):
    model = tmp_path / "models" / "base.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    manifest = prepare(tmp_path, base_model=str(model))
    plan = make_plan(manifest)
    loaded = load(build_task(plan, manifest.data["inputs"]))
    assert loaded.file_mounts["~/kohyagen-model/base.safetensors"] == str(model)
    assert '--base-model "$HOME"/kohyagen-model/base.safetensors' in loaded.run


def test_the_managed_task_keeps_the_run_folder_on_the_bucket(tmp_path):
    manifest = prepare(tmp_path)
    plan = make_plan(manifest, spot=True)
    task = managed_task(plan, manifest.data["inputs"], "s3://my-bucket/kohyagen")
    loaded = load(task)
    assert "~/kohyagen-results" in loaded.storage_mounts
    for r in loaded.resources:
        assert r.use_spot and not r.autostop_config  # the jobs controller tears down
        assert r.job_recovery["strategy"] == "FAILOVER"
    assert f'--run-dir "$HOME"/kohyagen-results/{plan.cluster}' in loaded.run
    submitted = submit_jobs([manifest.run_dir], None, bucket="s3://my-bucket/kohyagen")
    assert submitted[0].job_ids == () and submitted[0].cluster == plan.cluster
    with pytest.raises(UsageError, match="need a bucket"):
        submit_jobs([manifest.run_dir], None, bucket=None)
    with pytest.raises(UsageError, match="cannot mount"):
        submit_jobs([manifest.run_dir], None, bucket="s3://b", cloud="runpod")


def test_dry_run_prints_the_task_and_plan_and_contacts_nothing(tmp_path, monkeypatch):
    attempts = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: attempts.append(addr))
    monkeypatch.delenv("SKYPILOT_DISABLE_LOCAL_API_SERVER")  # the test, not the env, proves it
    monkeypatch.setattr(sky_api, "default_api", lambda: pytest.fail("the dry run used the API"))
    before = sky_server_pids()
    images = make_images(tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main,
        ["cloud", "run", str(images), "--name", "anna", "--trigger", "sks", "--gpu", "rtx4090",
         "--cloud", "runpod", "--budget", "5", "--dry-run"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "any_of:" in result.output and "RTX4090:1" in result.output
    assert "down: true" in result.output and "idle_minutes: 10" in result.output
    assert "expected total" in result.output and "nothing was rented" in result.output
    written = tmp_path / "runs" / "anna" / "sky-task.yaml"
    import yaml

    load(yaml.safe_load(written.read_text()))
    assert attempts == [] and sky_server_pids() == before


def test_dry_run_over_budget_is_refused(tmp_path, monkeypatch):
    images = make_images(tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main,
        ["cloud", "run", str(images), "--name", "anna", "--trigger", "sks", "--budget", "0.01",
         "--dry-run"],
    )  # fmt: skip
    assert result.exit_code == 1 and "above your budget" in result.output


@pytest.mark.parametrize("value", ["nan", "-1"])
def test_nan_or_negative_budget_is_a_usage_error_before_any_work(tmp_path, monkeypatch, value):
    images = make_images(tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main,
        ["cloud", "run", str(images), "--name", "anna", "--trigger", "sks", "--budget", value,
         "--dry-run"],
    )  # fmt: skip
    assert result.exit_code == 2 and "--budget" in result.output
    assert not (tmp_path / "runs").exists()


def test_task_yaml_round_trips(tmp_path):
    import yaml

    manifest = prepare(tmp_path)
    task = build_task(make_plan(manifest), manifest.data["inputs"])
    assert yaml.safe_load(task_yaml(task)) == task


class RecordedSdk:
    """SkyPilot's SDK functions replaced at the module (no API server): request ids out,
    results back through stream_and_get, as 0.14.1's asynchronous SDK does."""

    def __init__(self, monkeypatch):
        self.calls = []
        for name in ("launch", "down", "tail_logs", "status", "stream_and_get", "get"):
            monkeypatch.setattr(sky, name, getattr(self, name))
        self.down_error = None

    def launch(self, task, **kw):
        self.calls.append(("launch", type(task).__name__, kw))
        self.secrets = {k: v.get_secret_value() for k, v in task.secrets.items()}
        return "rid-launch"

    def down(self, cluster):
        self.calls.append(("down", cluster))
        return "rid-down"

    def tail_logs(self, cluster, job_id, **kw):
        self.calls.append(("tail_logs", cluster, job_id, kw["follow"]))
        return 0

    def status(self, cluster_names=None, refresh=None):
        assert refresh == sky.StatusRefreshMode.AUTO  # autodowned clusters show as gone
        return "rid-status"

    def stream_and_get(self, request_id=None, **kw):
        assert request_id is not None  # None would stream an unrelated request (facts §1.1)
        self.calls.append(("stream_and_get", request_id))
        if request_id == "rid-down" and self.down_error:
            raise self.down_error
        return (7, object()) if request_id == "rid-launch" else None

    def get(self, request_id):
        from sky.schemas.api.responses import StatusResponse

        assert request_id == "rid-status"
        return [StatusResponse.model_construct(
            name="kohyagen-a-1", status=sky.ClusterStatus.UP, autostop=10, to_down=True,
            resources_str="1x RunPod(RTX4090)")]  # fmt: skip


@pytest.fixture
def rsync_and_ssh(tmp_path, monkeypatch):
    """A fake rsync (records its arguments, fails the first `fail` times) and ssh on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "rsync.log"
    (bin_dir / "rsync").write_text(
        f"#!/bin/sh\necho \"$@\" >> {log}\n"
        f"[ $(wc -l < {log}) -gt ${{FAIL:-0}} ] || {{ echo 'connection reset' >&2; exit 12; }}\n"
    )
    (bin_dir / "ssh").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("rsync", "ssh"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(sky_api, "COPY_RETRY_S", 0)
    return log


def test_copy_down_retries_a_dropped_rsync_then_gives_up(tmp_path, monkeypatch, rsync_and_ssh):
    api = sky_api.SkyApi()
    monkeypatch.setenv("FAIL", "1")
    api.copy_down("kohyagen-a-1", "sky_workdir", tmp_path / "run", exclude=["training_data/"])
    calls = rsync_and_ssh.read_text().splitlines()
    assert len(calls) == 2
    assert "--exclude=training_data/" in calls[0]
    assert calls[0].endswith(f"kohyagen-a-1:sky_workdir/ {tmp_path / 'run'}/")
    monkeypatch.setenv("FAIL", "99")
    with pytest.raises(KohyagenError, match="connection reset"):
        api.copy_down("kohyagen-a-1", "sky_workdir", tmp_path / "run", exclude=[])
    assert len(rsync_and_ssh.read_text().splitlines()) == 2 + sky_api.COPY_ATTEMPTS


def test_no_rsync_is_found_out_before_renting(tmp_path, monkeypatch):
    sdk = RecordedSdk(monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path))  # neither rsync nor ssh
    with pytest.raises(KohyagenError, match="rsync"):
        sky_api.SkyApi().launch({"name": "x", "run": "true"}, "kohyagen-a-1", idle_minutes=10)
    assert sdk.calls == []


def test_the_seam_speaks_the_asynchronous_sdk(tmp_path, monkeypatch, rsync_and_ssh):
    sdk = RecordedSdk(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    manifest = prepare(tmp_path)
    task = build_task(make_plan(manifest), manifest.data["inputs"])
    api = sky_api.SkyApi()
    assert api.launch(task, "kohyagen-a-1", idle_minutes=10) == 7
    kind, kw = sdk.calls[0][1], sdk.calls[0][2]
    assert sdk.secrets == {"HF_TOKEN": "hf_secret"}
    assert "hf_secret" not in task_yaml(task)
    assert kind == "Task" and kw["idle_minutes_to_autostop"] == 10 and kw["down"] is True
    assert kw["cluster_name"] == "kohyagen-a-1"
    assert api.tail_logs("kohyagen-a-1", 7) == 0
    assert api.down("kohyagen-a-1") is True
    sdk.down_error = sky.exceptions.ClusterDoesNotExist("gone")
    assert api.down("kohyagen-a-1") is False  # already gone counts as down
    (info,) = api.status()
    assert (info.name, info.status, info.autostop, info.to_down) == ("kohyagen-a-1", "UP", 10, True)


def test_a_launch_skypilot_refuses_is_a_clear_error(tmp_path, rsync_and_ssh):
    """The real SDK, with the local API server disabled: it fails at once (facts §1.3)."""
    manifest = prepare(tmp_path)
    task = build_task(make_plan(manifest), manifest.data["inputs"])
    with pytest.raises(KohyagenError, match="SkyPilot could not launch") as info:
        sky_api.SkyApi().launch(task, "kohyagen-a-1", idle_minutes=10)
    assert "sky check" in str(info.value)


def test_skypilot_refusing_a_task_is_a_clear_error():
    with pytest.raises(KohyagenError, match="SkyPilot refused the task"):
        sky_api.validate_task({"name": "x", "resources": {"disk_size": "lots"}, "run": "true"})


def _cli_run(tmp_path, monkeypatch, api, *extra):
    monkeypatch.setattr(sky_api, "default_api", lambda: api)
    images = make_images(tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(
        main,
        ["cloud", "run", str(images), "--name", "anna", "--trigger", "sks", "-y", *extra],
    )


def test_cloud_run_trains_brings_the_lora_back_and_downs(tmp_path, monkeypatch):
    from tests.cloud_fixtures import FakeSkyApi

    (tmp_path / "node").mkdir()
    api = FakeSkyApi(tmp_path / "node")
    result = _cli_run(tmp_path, monkeypatch, api)
    assert result.exit_code == 0, result.output
    assert api.names() == ["status", "launch", "tail_logs", "copy_down", "down"]
    lora = tmp_path / "runs" / "anna" / "output" / "anna.safetensors"
    assert f"LoRA: {lora}" in result.output and lora.is_file()
    again = _cli_run(tmp_path, monkeypatch, FakeSkyApi(tmp_path / "node2"))
    assert again.exit_code == 1 and "already been trained" in again.output


def test_cloud_run_ctrl_c_downs_and_exits_130(tmp_path, monkeypatch):
    from tests.cloud_fixtures import FakeSkyApi

    (tmp_path / "node").mkdir()
    api = FakeSkyApi(tmp_path / "node", raise_in={"tail_logs": KeyboardInterrupt()})
    result = _cli_run(tmp_path, monkeypatch, api)
    assert result.exit_code == 130
    assert api.names()[-1] == "down"


def test_cloud_run_without_a_terminal_needs_yes(tmp_path, monkeypatch):
    images = make_images(tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main, ["cloud", "run", str(images), "--name", "anna", "--trigger", "sks"]
    )
    assert result.exit_code == 2 and "-y" in result.output
    assert not (tmp_path / "runs").exists()


def test_cloud_queue_submits_one_managed_job_per_run(tmp_path, monkeypatch):
    from tests.cloud_fixtures import FakeSkyApi

    first = prepare(tmp_path / "a", name="a")
    second = prepare(tmp_path / "b", name="b")
    api = FakeSkyApi(tmp_path)
    monkeypatch.setattr(sky_api, "default_api", lambda: api)
    args = ["cloud", "queue", str(first.run_dir), str(second.run_dir), "--bucket", "s3://b/k"]
    dry = CliRunner().invoke(main, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert api.calls == [] and "s3://b/k/kohyagen-a-" in dry.output
    over = CliRunner().invoke(main, [*args, "-y", "--budget", "0.01"])
    assert over.exit_code == 1 and "together" in over.output and api.calls == []
    result = CliRunner().invoke(main, [*args, "-y"])
    assert result.exit_code == 0, result.output
    assert [c[0] for c in api.calls] == ["jobs_launch", "jobs_launch"]
    from kohyagen.cloud.records import recorded
    from kohyagen.run.manifest import Manifest

    record = recorded(Manifest.load(first.run_dir))
    assert record["status"] == "submitted" and record["bucket"] == "s3://b/k"


# SkyPilot's own reader on kohyagen's fake catalogs, in a process of its own: the catalog
# folder is fixed when sky.catalog.common is imported, and this one may not fetch.
SKY_READS = """
import socket
def refuse(*args, **kwargs):
    raise RuntimeError("tests must not use the network")
socket.socket.connect = refuse
from sky.catalog import runpod_catalog, vast_catalog
for cloud, module in (("runpod", runpod_catalog), ("vast", vast_catalog)):
    for spot in (False, True):
        types, _ = module.get_instance_type_for_accelerator("RTX4090", 1, use_spot=spot)
        print(cloud, spot, module.get_hourly_cost(types[0], use_spot=spot))
"""


def test_skypilot_reads_the_same_catalog_to_the_same_prices(tmp_path):
    import subprocess
    import sys

    from kohyagen.cloud.catalog import catalog_price, load_catalogs
    from tests.sky_catalogs import RUNPOD, RUNPOD_COLUMNS, VAST, VAST_COLUMNS, write_catalog

    home = tmp_path / "home"
    # fresh (SkyPilot refetches RunPod's after 7 h) and without .meta/*.md5, which SkyPilot
    # takes for a file the user made and never overwrites; Vast's is never refetched
    write_catalog(home, "runpod", RUNPOD_COLUMNS, RUNPOD)
    write_catalog(home, "vast", VAST_COLUMNS, VAST)
    (tmp_path / "tmp").mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "TMPDIR": str(tmp_path / "tmp"),
           "SKYPILOT_DISABLE_USAGE_COLLECTION": "1", "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", SKY_READS], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = {
        (c, s == "True"): float(p)
        for c, s, p in (ln.split() for ln in proc.stdout.splitlines())
        if c in ("runpod", "vast")  # SkyPilot may log lines of its own
    }
    assert len(theirs) == 4
    ours = load_catalogs(["runpod", "vast"], root=home / ".sky" / "catalogs" / "v8")
    for (cloud, spot), price in theirs.items():
        found = catalog_price(ours, [("RTX4090", cloud)], spot=spot)
        assert found is not None and found.spot == spot
        assert found.price == pytest.approx(price), (cloud, spot)
    assert not (home / ".sky" / "catalogs" / "v8" / ".meta").exists()  # no fetch was tried


def test_dry_run_shows_where_each_price_comes_from(tmp_path, monkeypatch):
    import json

    from tests.sky_catalogs import RUNPOD, RUNPOD_COLUMNS, write_catalog

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SKY_RUNTIME_DIR", raising=False)
    write_catalog(tmp_path / "home", "runpod", RUNPOD_COLUMNS, RUNPOD)
    images = make_images(tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    args = ["cloud", "run", str(images), "--name", "anna", "--trigger", "sks", "--cloud",
            "runpod", "--dry-run"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "rtx4090: SkyPilot catalog (runpod, on-demand), cached 1 h ago" in result.output
    try:  # stdout apart from the progress on stderr: click 8.1 must be asked, 8.2 always is
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        runner = CliRunner()
    as_json = runner.invoke(main, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    first = json.loads(as_json.stdout)["plan"]["candidates"][0]
    assert first["price_per_hour"] == pytest.approx(0.69)
    assert first["price_source"].startswith("SkyPilot catalog (runpod, on-demand)")
