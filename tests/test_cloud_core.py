"""kohyagen without the [cloud] extra: nothing loads SkyPilot, and `kohyagen cloud` says
how to install it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from kohyagen.cli import main

PACKAGE = Path(__file__).resolve().parent.parent / "kohyagen"
BLOCK_SKY = "import sys; sys.modules['sky'] = None; "  # `import sky` now raises ImportError


def _python(code: str, subprocess_env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=120,
    )


def test_the_cli_and_its_help_never_import_skypilot(subprocess_env):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from kohyagen.cli import main\n"
        "for args in (['--help'], ['cloud', '--help'], ['cloud', 'run', '--help']):\n"
        "    assert CliRunner().invoke(main, args).exit_code == 0, args\n"
        "print(sorted(m for m in sys.modules if m == 'sky' or m.startswith('sky.')))\n"
    )
    proc = _python(code, subprocess_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_cloud_without_the_extra_says_how_to_install_it(subprocess_env):
    for args in (["cloud", "status"], ["cloud", "down", "x"], ["cloud", "queue", "."]):
        code = BLOCK_SKY + f"from kohyagen.cli import main; main({args!r})"
        proc = _python(code, subprocess_env)
        assert proc.returncode == 1, proc.stderr
        assert "pip install 'kohyagen[cloud]'" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_the_seam_loader_explains_a_missing_extra(monkeypatch):
    import pytest

    from kohyagen.cloud import sky_api
    from kohyagen.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "sky", None)
    assert sky_api.sky_installed() is False
    with pytest.raises(MissingDependency, match="SkyPilot"):
        sky_api.load_sky()
    result = CliRunner().invoke(main, ["cloud", "status"])
    assert result.exit_code == 1 and "kohyagen[cloud]" in result.output


def test_no_module_imports_skypilot_at_import_time():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only; imports inside functions are fine
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            offenders += [f"{path}: {n}" for n in names if n == "sky" or n.startswith("sky.")]
    assert offenders == []
