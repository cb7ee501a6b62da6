"""A managed job's results, from its bucket back into the local run folder:
`kohyagen cloud fetch RUN_DIR`.

A managed job's cluster is gone when the job ends (jobs.py), so its run folder lives on
the bucket the user named, under the cluster's name. Nothing in SkyPilot downloads a
bucket (skypilot-facts.md: buckets are file_mounts), so this runs the same tool
SkyPilot's own storage code uploads with: `aws s3 sync` for s3:// (and for r2:// with
Cloudflare's endpoint, the `r2` profile and ~/.cloudflare/r2.credentials, as
sky/adaptors/cloudflare.py sets them), `gsutil -m rsync -r` for gs://. Other buckets,
or a folder copied by hand, come in with `--from FOLDER`.

The copy lands in a staging folder inside the run folder first: a failed or empty
download leaves the run folder as it was. Then the node's paths in the manifest and the
configs become this machine's again (run.relocate), as `cloud run` does after its rsync.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kohyagen import safe_io
from kohyagen.cloud.records import note, recorded
from kohyagen.errors import KohyagenError, UsageError
from kohyagen.run.manifest import MANIFEST_NAME, Manifest, now

# The prepared copy of the images: this machine has it, and it is the bulk of the folder.
NOT_FETCHED = ("training_data",)
STAGING = ".kohyagen-fetch"
R2_ACCOUNT_ID = "~/.cloudflare/accountid"
R2_CREDENTIALS = "~/.cloudflare/r2.credentials"
INSTALL_HINT = {
    "aws": "install the AWS CLI (pip install awscli) and configure its credentials",
    "gsutil": "install the Google Cloud SDK (gsutil) and run `gcloud auth login`",
}
Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class Fetched:
    run_dir: str
    source: str  # the bucket URL, or the folder given with --from
    entries: tuple[str, ...]  # the top-level files and folders brought in

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bucket_folder(manifest: Manifest) -> str:
    """Where a managed job keeps this run folder: its bucket and its cluster's name."""
    record = recorded(manifest)
    if not record.get("managed") or not record.get("bucket") or not record.get("cluster"):
        raise UsageError(
            "this run folder was not sent as a managed job (no bucket recorded)",
            path=manifest.run_dir,
            hint="`kohyagen cloud run` copies its results back itself; fetch is for "
            "`kohyagen cloud queue` runs",
        )
    return f"{str(record['bucket']).rstrip('/')}/{record['cluster']}"


def download_command(url: str, dest: Path) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment that copy the bucket folder url into dest."""
    scheme, _, rest = url.partition("://")
    skip = [a for name in NOT_FETCHED for a in ("--exclude", f"{name}/*")]
    if scheme == "s3":
        return ["aws", "s3", "sync", "--no-follow-symlinks", *skip, url, str(dest)], {}
    if scheme == "r2":
        argv = ["aws", "s3", "sync", "--no-follow-symlinks", *skip, f"s3://{rest}", str(dest),
                "--endpoint-url", _r2_endpoint(), "--profile=r2"]  # fmt: skip
        return argv, {"AWS_SHARED_CREDENTIALS_FILE": os.path.expanduser(R2_CREDENTIALS)}
    if scheme == "gs":
        excluded = "|".join(f"^{name}/.*$" for name in NOT_FETCHED)
        return ["gsutil", "-m", "rsync", "-r", "-x", excluded, url, str(dest)], {}
    raise KohyagenError(
        f"kohyagen cannot download {scheme}:// buckets itself",
        hint=f"copy {url}/ into a folder with your cloud's own tool, then "
        "`kohyagen cloud fetch RUN_DIR --from FOLDER`",
    )


def _r2_endpoint() -> str:
    path = Path(os.path.expanduser(R2_ACCOUNT_ID))
    try:
        account = safe_io.read_text(path, limit=4096).strip().splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError):
        raise KohyagenError(
            "no Cloudflare account id for the r2:// bucket", path=path,
            hint="write your account id into ~/.cloudflare/accountid (as SkyPilot's R2 "
            "setup does)",
        ) from None  # fmt: skip
    return f"https://{account}.r2.cloudflarestorage.com"


def fetch_results(run_dir: str | Path, *, source: str | Path | None = None) -> Fetched:
    """Copy a managed job's run folder (or the folder `source`) over the local run folder
    and make its paths local; the local inputs and cloud record are kept."""
    run_dir = Path(run_dir).resolve()
    manifest = Manifest.load(run_dir)
    if manifest is None:
        raise UsageError("not a kohyagen run folder (no kohyagen.json)", path=run_dir)
    inputs, record = dict(manifest.data.get("inputs", {})), recorded(manifest)
    staging = run_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # left by a fetch that was killed
    try:
        if source is None:
            origin = bucket_folder(manifest)
            _download(origin, staging)
        else:
            origin = str(Path(source).resolve())
            _copy_folder(Path(origin), staging, run_dir)
        if not (staging / MANIFEST_NAME).is_file():
            raise KohyagenError(
                f"{origin} holds no run folder yet (no {MANIFEST_NAME})",
                hint="the job may not have started: see `kohyagen cloud status`, and "
                "fetch again later",
            )
        entries = tuple(_move_in(staging, run_dir))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    adopted = adopt_node_manifest(run_dir, inputs, record)
    note(adopted, status="fetched", fetched=now(), fetched_from=origin)
    return Fetched(str(run_dir), origin, entries)


def _download(url: str, staging: Path) -> None:
    argv, env = download_command(url, staging)
    if shutil.which(argv[0]) is None:
        raise KohyagenError(f"{argv[0]} not found; it copies {url}", hint=INSTALL_HINT[argv[0]])
    staging.mkdir()
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr or done.stdout or "no output").strip().splitlines()[-1:]
        raise KohyagenError(
            f"{argv[0]} could not copy {url}: {' '.join(last)}",
            hint="check the bucket name and your credentials for it; nothing was changed",
        )


def _copy_folder(source: Path, staging: Path, run_dir: Path) -> None:
    """A copy of the user's folder: it is only read."""
    if not source.is_dir():
        raise UsageError("--from must be a folder holding the job's run folder", path=source)
    if run_dir == source or source in run_dir.parents:
        # the copy would land inside what it copies
        raise UsageError("--from is the run folder itself or holds it", path=source,
                         hint="give the folder you copied from the bucket")  # fmt: skip
    shutil.copytree(source, staging, symlinks=True,
                    ignore=lambda folder, names: [n for n in names if n in NOT_FETCHED])  # fmt: skip


def _move_in(staging: Path, run_dir: Path) -> list[str]:
    """Move staging's entries into run_dir: the job's files replace the local ones of the
    same name, and files only this machine has (a LoRA copied here by hand) stay."""
    moved = []
    for name in sorted(os.listdir(staging)):
        if name in NOT_FETCHED or name == STAGING:
            continue
        _merge(staging / name, run_dir / name)
        moved.append(name)
    return moved


def _merge(src: Path, dst: Path) -> None:
    if src.is_dir() and not src.is_symlink() and dst.is_dir() and not dst.is_symlink():
        for name in os.listdir(src):
            _merge(src / name, dst / name)
        return
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    elif dst.exists() or dst.is_symlink():
        dst.unlink()
    os.replace(src, dst)


def adopt_node_manifest(
    run_dir: Path, inputs: dict[str, Any], record: dict[str, Any]
) -> Manifest:
    """After a copy from a node or a bucket: the node's paths in the manifest and configs
    become this machine's, and this machine's inputs and cloud record are kept. The
    manifest, as saved."""
    from kohyagen.run.relocate import relocate

    back = Manifest.load(run_dir)
    if back is None:
        raise KohyagenError("the run folder has no kohyagen.json", path=run_dir)
    moves = [(back.data.get("run_dir"), str(run_dir))]
    for key in ("images", "base_model"):
        there, here = back.data.get("inputs", {}).get(key), inputs.get(key)
        if there and here and there != here:
            moves.append((there, here))
    relocate(back, [(old, new) for old, new in moves if old])
    back.data["run_dir"] = str(run_dir)
    back.data["inputs"] = {**back.data.get("inputs", {}), **inputs}
    back.data["cloud"] = record
    back.save()
    return back
