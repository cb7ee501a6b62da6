import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kohyagen.cli import main
from tests.test_config_render import make_train_dir


@pytest.fixture
def data(tmp_path) -> Path:
    return make_train_dir(tmp_path)


def _run(*args, cwd=None):
    return CliRunner().invoke(main, list(map(str, args)))


def test_config_writes_files_and_reports(data, tmp_path):
    out = tmp_path / "cfg"
    result = _run("config", data, "--model", "sd15", "--gpu", "rtx3090", "-o", out,
                  "--trigger", "sks")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "training_config.toml").is_file()
    assert (out / "dataset_config.toml").is_file()
    assert (out / "sample_prompts.txt").is_file()
    assert "batch" in result.output and "wrote" in result.output
    # the written config is what `kohyagen lint` accepts
    lint = _run("lint", out / "training_config.toml")
    assert lint.exit_code == 0, lint.output
    again = _run("config", data, "--model", "sd15", "--gpu", "rtx3090", "-o", out)
    assert again.exit_code == 1 and "already exists" in again.output and "--force" in again.output
    # samples are on by default; --no-samples leaves the prompts and [sampling] out
    bare = _run("config", data, "--model", "sd15", "--gpu", "rtx3090", "-o", tmp_path / "bare",
                "--no-samples")  # fmt: skip
    assert bare.exit_code == 0, bare.output
    assert not (tmp_path / "bare" / "sample_prompts.txt").exists()
    assert "sample_prompts" not in (tmp_path / "bare" / "training_config.toml").read_text()
    forced = _run("config", data, "--model", "sd15", "--gpu", "rtx3090", "-o", out, "--force")
    assert forced.exit_code == 0, forced.output


def test_config_default_out_dir_is_runs_name(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run("config", data, "--model", "sd15", "--gpu", "l4", "--name", "mylora")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "mylora" / "training_config.toml").is_file()


def test_config_dry_run_and_json(data, tmp_path):
    out = tmp_path / "cfg"
    result = _run("config", data, "--model", "sdxl", "--gpu", "l4", "-o", out, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "# kohyagen-script: sdxl_train_network.py" in result.output
    assert not out.exists()
    result = _run("config", data, "--model", "sd2", "--gpu", "a100-80", "-o", out, "--json",
                  "--dry-run", "--set", "network_dim=8")  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["training"]["network_dim"] == 8
    assert payload["training"]["v2"] is True and payload["training"]["v_parameterization"] is True
    assert payload["plan"]["total_steps"] > 0 and payload["written"] == []
    assert payload["dataset"]["general"]["resolution"] == 768


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "sd15", "--gpu", "rtx9999"], "unknown GPU 'rtx9999'"),
        (["--model", "sd4", "--gpu", "l4"], "unknown model 'sd4'"),  # sd3 is a family now
        (["--model", "sdxl", "--gpu", "8gb"], "does not fit on 8gb"),
        (["--model", "sd15", "--gpu", "l4", "--set", "batch_size=4"], "train_batch_size"),
        (["--model", "sd15", "--gpu", "l4", "--set", "network_dim=big"], "network_dim=big"),
    ],
)
def test_config_errors_are_one_line(data, tmp_path, args, message):
    result = _run("config", data, "-o", tmp_path / "o", *args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_config_missing_and_plain_dataset(tmp_path):
    result = _run("config", tmp_path / "nope", "--model", "sd15", "--gpu", "l4")
    assert result.exit_code == 1 and "not found" in result.output
    from tests.conftest import make_image

    make_image(tmp_path / "plain" / "a.png")
    result = _run("config", tmp_path / "plain", "--model", "sd15", "--gpu", "l4")
    assert result.exit_code == 1 and "kohyagen dataset prepare" in result.output


def test_lint_many_files_json(data, tmp_path):
    out = tmp_path / "cfg"
    assert _run("config", data, "--model", "sd15", "--gpu", "l4", "-o", out).exit_code == 0
    result = _run("lint", out / "training_config.toml", out / "dataset_config.toml", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["errors"] == 0


def test_help_does_not_import_heavy_modules(subprocess_env):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from kohyagen.cli import main\n"
        "for args in (['config', '--help'], ['lint', '--help']):\n"
        "    assert CliRunner().invoke(main, args).exit_code == 0\n"
        "bad = [m for m in ('torch', 'onnxruntime', 'diffusers', 'matplotlib') "
        "if m in sys.modules]\n"
        "print(bad)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
