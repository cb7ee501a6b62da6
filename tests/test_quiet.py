import subprocess
import sys

import pytest

pytest.importorskip("diffusers")


def test_tiny_pipeline_is_made_without_third_party_chatter(tmp_path, subprocess_env):
    code = (
        "import sys\n"
        "from kohyagen.run.tiny import make_tiny_pipeline\n"
        "make_tiny_pipeline(sys.argv[1])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m")],
        capture_output=True,
        text=True,
        env=subprocess_env,
        check=True,
    )
    assert "Writing model shards" not in proc.stderr
    assert "kernels-community" not in proc.stderr
    assert "requires torchvision" not in proc.stderr
