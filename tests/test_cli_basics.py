import subprocess
import sys

from click.testing import CliRunner

from kohyagen.cli import main
from kohyagen.errors import ConfigError, KohyagenError, TrainingFailed


def test_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_help_imports_neither_onnxruntime_nor_torch(subprocess_env):
    code = (
        "import sys\n"
        "from kohyagen.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'diffusers', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env, check=True
    ).stdout
    assert "HEAVY=\n" in out, out


def test_error_messages_name_path_and_hint():
    err = ConfigError("bad value", path="/x/y.toml", hint="fix it")
    assert str(err) == "/x/y.toml: bad value (fix it)"
    assert err.exit_code == 1
    assert TrainingFailed("boom").exit_code == 3
    assert isinstance(TrainingFailed("boom"), KohyagenError)
