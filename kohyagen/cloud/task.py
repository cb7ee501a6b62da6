"""The SkyPilot task of a prepared run: resources, uploads, setup and run, as YAML data.

The task is a plain dict in SkyPilot's YAML shape (skypilot-facts.md §3), so that it can
be printed by --dry-run, written beside the run, and handed to SkyPilot's own loader
(sky.Task.from_yaml_config) unchanged. On the node the run folder is the workdir
(~/sky_workdir), the images and a local base model are file mounts, and the run command
is `kohyagen run` on that folder: it continues from the manifest, so a job started again
(a recovered spot job, a relaunch) resumes from the last saved epoch.
"""

from __future__ import annotations

import json
import shlex
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from kohyagen import __version__
from kohyagen.cloud.plan import CloudPlan

# kohya sd-scripts at the commit kohyagen's facts were read from (facts/kohya/README.md).
SD_SCRIPTS_REPO = "https://github.com/kohya-ss/sd-scripts"
SD_SCRIPTS_COMMIT = "48d368fa557731ad0488c07304dfeba8c07910eb"
# sd-scripts needs torch 2.6 or later (its README, facts/kohya/kohya-interface.md §h);
# the official image is Debian-based, which RunPod's ssh setup needs (facts §3).
DEFAULT_IMAGE = "docker:pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime"
REMOTE_IMAGES = "~/kohyagen-images"
REMOTE_MODEL = "~/kohyagen-model"
REMOTE_SOURCE = "~/kohyagen-source"
# Not uploaded: earlier attempts moved aside by --restart. (A .skyignore replaces the
# .gitignore rules SkyPilot would otherwise apply to the workdir, command_runner.py:555.)
SKYIGNORE = "previous/\n"


def kohyagen_source() -> Path | None:
    """The source checkout this kohyagen is installed from (pip install -e / a local
    folder), or None when it came from a package index."""
    try:
        raw = metadata.distribution("kohyagen").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not raw:
        return None
    url = json.loads(raw).get("url", "")
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return None
    path = Path(unquote(parsed.path))
    return path if (path / "pyproject.toml").is_file() else None


def _remote_home(path: str) -> str:
    """A ~/ path as the shell on the node should expand it (quoted, $HOME left open)."""
    return '"$HOME"/' + shlex.quote(path.removeprefix("~/"))


def _setup(backend: str, source: Path | None) -> str:
    extra = "[train]" if backend == "builtin" else ""
    if source is not None:
        spec = _remote_home(REMOTE_SOURCE) + (shlex.quote(extra) if extra else "")
    else:
        spec = shlex.quote(f"kohyagen{extra}=={__version__}")
    lines = ["set -e", f"python -m pip install --quiet {spec}"]
    if backend != "builtin":
        lines += [
            "command -v git >/dev/null || (apt-get update -qq && apt-get install -y -qq git)",
            f'[ -d "$HOME/sd-scripts/.git" ] || git clone --quiet {SD_SCRIPTS_REPO} "$HOME/sd-scripts"',
            f'git -C "$HOME/sd-scripts" checkout --quiet {SD_SCRIPTS_COMMIT}',
            '(cd "$HOME/sd-scripts" && python -m pip install --quiet -r requirements.txt)',
        ]
    return "\n".join(lines) + "\n"


class _OnNode(str):
    """A ~/ path on the node, for the shell to expand."""


def _shell(args: list[str]) -> str:
    return " ".join(_remote_home(a) if isinstance(a, _OnNode) else shlex.quote(a) for a in args)


def _model_arg(base: str) -> str:
    """A local base model travels as a file mount under REMOTE_MODEL, by its own name
    (the run manifest follows a moved model of the same name); a hub id stays as it is."""
    if Path(base).is_absolute():
        return _OnNode(f"{REMOTE_MODEL}/{Path(base).name}")
    return base


def run_command(inputs: dict[str, Any], preset: str, *, run_dir: str = ".") -> str:
    """`kohyagen run` on the uploaded folder with the inputs that made it (the manifest
    refuses other ones), the images and a local base model at their mounted places.
    run_dir "." is the workdir the job starts in; an _OnNode path is expanded there."""
    args = [
        "kohyagen", "run", _OnNode(REMOTE_IMAGES),
        "--name", inputs["name"],
        "--trigger", inputs["trigger"],
        "--model", inputs["model"],
        "--gpu", preset,
        "--backend", inputs.get("backend") or "auto",
        "--run-dir", run_dir,
        "--yes",
    ]  # fmt: skip
    if inputs.get("base_model"):
        args += ["--base-model", _model_arg(inputs["base_model"])]
    if inputs.get("epochs") is not None:
        args += ["--epochs", str(inputs["epochs"])]
    if inputs.get("seed") is not None:
        args += ["--seed", str(inputs["seed"])]
    for override in inputs.get("overrides") or ():
        args += ["--set", override]
    return _shell(args) + "\n"


def file_mounts(inputs: dict[str, Any], source: Path | None) -> dict[str, str]:
    """Node path -> local path: the images, a local base model, the kohyagen source."""
    mounts = {REMOTE_IMAGES: inputs["images"]}
    base = inputs.get("base_model")
    if base and Path(base).is_absolute():
        mounts[str(_model_arg(base))] = base
    if source is not None:
        mounts[REMOTE_SOURCE] = str(source)
    return mounts


def _resources(plan: CloudPlan, image: str, *, managed: bool) -> dict[str, Any]:
    resources: dict[str, Any] = {
        # any_of: SkyPilot rents the cheapest of these it can get (optimizer.py:1501).
        "any_of": [
            {"accelerators": f"{accelerator}:1", "infra": cloud}
            for c in plan.candidates
            for accelerator, cloud in c.offers
        ],
        "disk_size": plan.disk_gb,
        "image_id": image,
        "use_spot": plan.spot,
    }
    if plan.max_price_per_hour is not None:
        resources["max_hourly_cost"] = plan.max_price_per_hour
    if managed:
        # The jobs controller tears a managed job's cluster down when the job ends and
        # starts a new one after a spot preemption; the run folder on the bucket resumes.
        resources["job_recovery"] = {"strategy": "FAILOVER", "max_restarts_on_errors": 1}
    else:
        # Teardown on the node itself (skylet), even when this machine is gone: down, not
        # stop (RunPod and Lambda cannot stop), after idle_minutes without a job, which is
        # the window kohyagen has to copy the results back (facts §3, §5).
        resources["autostop"] = {"idle_minutes": plan.idle_minutes, "down": True}
    return resources


def build_task(
    plan: CloudPlan,
    inputs: dict[str, Any],
    *,
    image: str = DEFAULT_IMAGE,
    source: Path | None = None,
    managed: bool = False,
) -> dict[str, Any]:
    """The SkyPilot task (YAML data) that trains the prepared run of `plan` on a rented GPU
    (managed: as a managed job, see kohyagen.cloud.jobs)."""
    backend = inputs.get("backend") or "auto"
    return {
        "name": plan.cluster,
        "resources": _resources(plan, image, managed=managed),
        "workdir": str(plan.run_dir),
        "file_mounts": file_mounts(inputs, source),
        "envs": {"KOHYAGEN_CLUSTER": plan.cluster, "PYTHONUNBUFFERED": "1"},
        "setup": _setup(backend, source),
        "run": run_command(inputs, plan.preset),
    }


def write_task(plan: CloudPlan, task: dict[str, Any]) -> Path:
    """sky-task.yaml (what SkyPilot runs, kept for `sky launch` by hand) and the
    .skyignore of the upload, both in the run folder."""
    from kohyagen.atomic import write_text_atomic

    write_text_atomic(plan.run_dir / ".skyignore", SKYIGNORE)
    path = plan.run_dir / "sky-task.yaml"
    write_text_atomic(path, task_yaml(task))
    return path


def task_yaml(task: dict[str, Any]) -> str:
    """The task as YAML, with setup and run as readable `|` blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(task, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=100)
