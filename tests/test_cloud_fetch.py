"""`kohyagen cloud fetch`: a managed job's run folder from its bucket into the local one.

The bucket tools are fakes on PATH (aws, gsutil) that copy from a folder playing the
bucket and log how they were called; the run folders are real, prepared by the pipeline.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kohyagen.cli import main
from kohyagen.cloud.fetch import STAGING
from kohyagen.cloud.records import note, recorded
from kohyagen.run.manifest import MANIFEST_NAME, Manifest
from kohyagen.run.relocate import relocate
from tests.cloud_fixtures import prepare

CLUSTER = "kohyagen-anna-1a2b"
NODE = f"/root/kohyagen-results/{CLUSTER}"

FAKE_TOOL = r"""#!PYTHON
import json, os, shutil, sys
from pathlib import Path
argv = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"tool": Path(sys.argv[0]).name, "argv": argv,
        "creds": os.environ.get("AWS_SHARED_CREDENTIALS_FILE")}) + "\n")
if os.environ.get("FAKE_EXIT"):
    print("AccessDenied: no such bucket", file=sys.stderr)
    sys.exit(int(os.environ["FAKE_EXIT"]))
urls = [a for a in argv if "://" in a and not a.startswith("https://")]
src = Path(os.environ["FAKE_BUCKETS"]) / urls[0].split("://", 1)[1]
dest = Path(argv[argv.index(urls[0]) + 1])
if src.is_dir():
    shutil.copytree(src, dest, dirs_exist_ok=True,
                    ignore=lambda d, names: ["training_data"] if d == str(src) else [])
"""


def _tree_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def tools(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("aws", "gsutil"):
        script = bin_dir / name
        script.write_text(FAKE_TOOL.replace("PYTHON", sys.executable))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "tool.log"))
    monkeypatch.setenv("FAKE_BUCKETS", str(tmp_path / "buckets"))
    return tmp_path / "tool.log"


def _submitted(tmp_path: Path, bucket: str = "s3://bkt/kohyagen") -> Manifest:
    """A prepared run folder recorded as a managed job, and its trained copy on the
    'bucket' with the node's paths, as the job leaves it."""
    manifest = prepare(tmp_path)
    note(manifest, cluster=CLUSTER, managed=True, bucket=bucket, status="submitted")
    there = tmp_path / "buckets" / bucket.split("://", 1)[1] / CLUSTER
    shutil.copytree(manifest.run_dir, there)
    on_node = Manifest.load(there)
    assert on_node is not None
    relocate(on_node, [(str(manifest.run_dir), NODE)])
    on_node.data["run_dir"] = NODE
    on_node.data["inputs"]["images"] = "/root/sky_workdir/images"
    on_node.save()
    (there / "output").mkdir(exist_ok=True)
    (there / "output" / "anna.safetensors").write_bytes(b"lora")
    (there / "training_data" / "from-the-node.txt").write_text("not fetched")
    return manifest


def test_fetch_brings_the_results_home_with_local_paths(tmp_path, tools):
    manifest = _submitted(tmp_path)
    run_dir = manifest.run_dir
    (run_dir / "output").mkdir(exist_ok=True)
    (run_dir / "output" / "mine.safetensors").write_bytes(b"copied here by hand")
    result = CliRunner().invoke(main, ["cloud", "fetch", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "output" / "anna.safetensors").read_bytes() == b"lora"
    assert (run_dir / "output" / "mine.safetensors").exists()  # only this machine had it
    assert not (run_dir / "training_data" / "from-the-node.txt").exists()
    back = Manifest.load(run_dir)
    assert back is not None and back.data["run_dir"] == str(run_dir)
    assert back.data["inputs"]["images"] == manifest.data["inputs"]["images"]
    assert NODE not in (run_dir / "training_config.toml").read_text()
    assert NODE not in (run_dir / MANIFEST_NAME).read_text()
    record = recorded(back)
    assert record["bucket"] == "s3://bkt/kohyagen" and record["fetched_from"].endswith(CLUSTER)
    assert record["status"] == "fetched"
    call = json.loads(tools.read_text().splitlines()[0])
    assert call["tool"] == "aws" and call["argv"][:3] == ["s3", "sync", "--no-follow-symlinks"]
    assert f"s3://bkt/kohyagen/{CLUSTER}" in call["argv"]
    assert not (run_dir / STAGING).exists()


def test_r2_uses_cloudflare_s_endpoint_profile_and_credentials(tmp_path, tools, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / ".cloudflare").mkdir(parents=True)
    (tmp_path / "home" / ".cloudflare" / "accountid").write_text("acct123\n")
    manifest = _submitted(tmp_path, bucket="r2://bkt/kohyagen")
    result = CliRunner().invoke(main, ["cloud", "fetch", str(manifest.run_dir)])
    assert result.exit_code == 0, result.output
    call = json.loads(tools.read_text().splitlines()[0])
    assert "https://acct123.r2.cloudflarestorage.com" in call["argv"]
    assert "--profile=r2" in call["argv"] and f"s3://bkt/kohyagen/{CLUSTER}" in call["argv"]
    assert call["creds"] == str(tmp_path / "home" / ".cloudflare" / "r2.credentials")


def test_r2_without_an_account_id_says_where_it_goes(tmp_path, tools, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    manifest = _submitted(tmp_path, bucket="r2://bkt/kohyagen")
    result = CliRunner().invoke(main, ["cloud", "fetch", str(manifest.run_dir)])
    assert result.exit_code == 1 and "accountid" in result.output
    assert not tools.exists()


def test_gcs_uses_gsutil_rsync_without_the_images(tmp_path, tools):
    manifest = _submitted(tmp_path, bucket="gs://bkt/kohyagen")
    result = CliRunner().invoke(main, ["cloud", "fetch", str(manifest.run_dir)])
    assert result.exit_code == 0, result.output
    call = json.loads(tools.read_text().splitlines()[0])
    assert call["tool"] == "gsutil" and call["argv"][:3] == ["-m", "rsync", "-r"]
    assert call["argv"][call["argv"].index("-x") + 1] == "^training_data/.*$"
    assert (manifest.run_dir / "output" / "anna.safetensors").exists()


def test_other_buckets_come_in_with_from_and_the_copy_is_only_read(tmp_path, tools):
    manifest = _submitted(tmp_path, bucket="azure://acct/container")
    result = CliRunner().invoke(main, ["cloud", "fetch", str(manifest.run_dir)])
    assert result.exit_code == 1 and "--from FOLDER" in result.output
    copied = tmp_path / "buckets" / "acct" / "container" / CLUSTER
    before = _tree_hash(copied)
    result = CliRunner().invoke(
        main, ["cloud", "fetch", str(manifest.run_dir), "--from", str(copied)]
    )
    assert result.exit_code == 0, result.output
    assert (manifest.run_dir / "output" / "anna.safetensors").exists()
    assert _tree_hash(copied) == before


@pytest.mark.parametrize("problem", ["no tool", "tool fails", "empty bucket"])
def test_a_failed_fetch_changes_nothing(tmp_path, tools, monkeypatch, problem):
    manifest = _submitted(tmp_path)
    if problem == "no tool":
        monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    elif problem == "tool fails":
        monkeypatch.setenv("FAKE_EXIT", "1")
    else:
        shutil.rmtree(tmp_path / "buckets")
    before = _tree_hash(manifest.run_dir)
    result = CliRunner().invoke(main, ["cloud", "fetch", str(manifest.run_dir)])
    assert result.exit_code == 1, result.output
    message = {"no tool": "aws not found", "tool fails": "AccessDenied",
               "empty bucket": "holds no run folder yet"}[problem]  # fmt: skip
    assert message in result.output and "Traceback" not in result.output
    assert _tree_hash(manifest.run_dir) == before
    assert not (manifest.run_dir / STAGING).exists()


def test_a_run_not_sent_as_a_managed_job_is_refused(tmp_path, tools):
    manifest = prepare(tmp_path)
    result = CliRunner().invoke(main, ["cloud", "fetch", str(manifest.run_dir)])
    assert result.exit_code == 2 and "managed job" in result.output


def test_from_cannot_be_the_run_folder_itself(tmp_path, tools):
    manifest = _submitted(tmp_path)
    for source in (manifest.run_dir, manifest.run_dir.parent):
        result = CliRunner().invoke(
            main, ["cloud", "fetch", str(manifest.run_dir), "--from", str(source)]
        )
        assert result.exit_code == 2 and "holds it" in result.output
