"""The versions a run records: kohyagen, Python, the ML libraries, an sd-scripts checkout.

Kept in the manifest so that a later reader knows what made the LoRA. It is separate
from the manifest because it asks the installed packages and git, not the run folder.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from kohyagen import __version__


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        # not installed (torch without the [train] extra, say): left out of the record
        return None


def git_revision(path: str | Path) -> str | None:
    """`git rev-parse HEAD` of a checkout, or None when it is not a git checkout."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def collect_versions(sd_scripts: str | Path | None = None) -> dict[str, Any]:
    versions: dict[str, Any] = {
        "kohyagen": __version__,
        "python": platform.python_version(),
    }
    # the libraries whose versions change what a training or a tagging makes
    for pkg in ("torch", "diffusers", "transformers", "accelerate", "onnxruntime"):
        version = _package_version(pkg)
        if version:
            versions[pkg] = version
    if sd_scripts is not None:
        versions["sd_scripts"] = {"path": str(sd_scripts), "rev": git_revision(sd_scripts)}
    return versions
