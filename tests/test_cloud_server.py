"""The seam against SkyPilot's real SDK and a real local API server (no cloud: offline,
no credentials). SkyPilot starts the server itself on the first call and it outlives the
process that started it (skypilot-facts.md §2), so the fixture stops it and checks, by
its port, that no server process is left."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sky")

from tests.cloud_fixtures import sky_server_pids
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _servers_on(port: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "sky.server.server" in line and f"{port}" in line]


@pytest.fixture
def server_env(tmp_path):
    """A private HOME, TMPDIR and port (api_stop kills every server on its port, so a
    developer's own server on the default port must not be the one), stopped after."""
    port = _free_port()
    (tmp_path / "tmp").mkdir()
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path / "tmp"),
        "PYTHONPATH": str(REPO_ROOT),
        "SKYPILOT_API_SERVER_LOCAL_PORT": str(port),
        "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
    }
    before = sky_server_pids()
    yield env, port
    subprocess.run(
        [sys.executable, "-c", "import sky; sky.api_stop()"],
        env=env, capture_output=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert _servers_on(port) == []
    assert sky_server_pids() <= before


def test_status_and_down_through_a_real_api_server(server_env, tmp_path):
    env, port = server_env
    code = (
        "from kohyagen.cloud.sky_api import SkyApi\n"
        "api = SkyApi()\n"
        "print('status', api.status())\n"
        "print('down', api.down('kohyagen-nothing-000000'))\n"
        "import subprocess\n"
        "ps = subprocess.run(['ps', '-eo', 'args='], capture_output=True, text=True).stdout\n"
        f"print('server', any('sky.server.server' in l and '--port={port}' in l\n"
        "                     for l in ps.splitlines()))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    # offline and without credentials: no clusters, and a cluster that does not exist
    # counts as down (ClusterDoesNotExist, facts §1.3)
    assert "status []" in proc.stdout and "down False" in proc.stdout
    assert "server True" in proc.stdout  # SkyPilot started one, on this test's port
