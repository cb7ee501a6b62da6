"""Shared test fixtures. Tests never touch the network or download models."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# SkyPilot lives in its own environment (.venv-cloud; it pins click<8.2): where it is not
# installed these modules are not collected, rather than skipped, and .ci/run runs them there.
collect_ignore = (
    ["test_cloud_task.py", "test_cloud_server.py"]
    if importlib.util.find_spec("sky") is None
    else []
)
# kohya facts and real sd-scripts output, kept in the repository (facts/kohya/README.md)
FACTS = REPO_ROOT / "facts"
KOHYA_FACTS = FACTS / "kohya"

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return True
    host = address[0] if address else ""
    return host in ("localhost", "::1") or str(host).startswith("127.")


@pytest.fixture(autouse=True)
def _private_user_folders(monkeypatch, tmp_path_factory):
    """Measurements, prices and caches go to a folder of the test, never the user's own
    (a test run once taught the real ~/.config/kohyagen a one-second 'RTX 4090' run).
    SkyPilot's catalog cache too: with the user's real ~/.sky/catalogs, a plan's prices
    would be theirs, not the test's."""
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("SKY_RUNTIME_DIR", str(home / "sky"))


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    real_connect = socket.socket.connect

    def guarded_connect(self, address):
        if not _is_local(address):
            raise RuntimeError(f"tests must not use the network (tried {address!r})")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)


@pytest.fixture
def subprocess_env(tmp_path) -> dict[str, str]:
    """Environment for child processes: this checkout importable, offline, isolated HF cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_HOME"] = str(tmp_path / "hf_home")
    return env


@pytest.fixture
def shared_dir() -> Path:
    """The folder holding kohya/ (facts and real sd-scripts output), inside the repository."""
    return FACTS


@pytest.fixture
def python_exe() -> str:
    return sys.executable


def make_image(path: Path, size=(64, 64), color=(200, 100, 50), mode="RGB", fmt=None) -> Path:
    """Write a small image; used by many tests."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new(mode, size, color if mode in ("RGB", "RGBA") else 128)
    image.save(path, format=fmt)
    return path
