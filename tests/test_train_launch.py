"""Finding sd-scripts, the launch argv (pinned), dry runs, lint refusal, run folders."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner
from train_fixtures import make_checkout, write_configs

from kohyagen.cli import main
from kohyagen.errors import LintFailed, SdScriptsNotFound, UsageError
from kohyagen.launch import checkout as checkout_module
from kohyagen.launch import train as launch
from kohyagen.launch.checkout import find_python, find_sd_scripts
from kohyagen.launch.command import build_command
from kohyagen.launch.run_folder import choose_run_dir


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("KOHYA_SD_SCRIPTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(checkout_module, "_PACKAGE_ROOT", tmp_path / "kohyagen-checkout")


def test_argv_sd15_one_gpu():
    argv = build_command(
        backend="kohya", script="/k/train_network.py", config="/r/training_config.toml",
        dataset_config="/r/dataset_config.toml", gpus=1, mixed_precision="bf16", python="/k/venv/bin/python",
    )  # fmt: skip
    assert argv == [
        "/k/venv/bin/python", "-m", "accelerate.commands.launch",
        "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "bf16",
        "--dynamo_backend", "no",
        "/k/train_network.py", "--config_file", "/r/training_config.toml",
        "--dataset_config", "/r/dataset_config.toml",
    ]  # fmt: skip


def test_argv_sdxl_four_gpus():
    argv = build_command(
        backend="kohya", script="/k/sdxl_train_network.py", config="/r/t.toml", dataset_config=None,
        gpus=4, mixed_precision="fp16", python="python3",
    )  # fmt: skip
    assert argv == [
        "python3", "-m", "accelerate.commands.launch",
        "--num_processes", "4", "--num_machines", "1", "--mixed_precision", "fp16",
        "--dynamo_backend", "no", "--multi_gpu",
        "/k/sdxl_train_network.py", "--config_file", "/r/t.toml",
    ]  # fmt: skip


def test_argv_builtin_backend_runs_the_module():
    argv = build_command(
        backend="builtin",
        script=None,
        config="c.toml",
        dataset_config="d.toml",
        gpus=4,
        python="py",
    )
    assert argv[-7:] == [
        "--multi_gpu",
        "-m",
        "kohyagen.trainer",
        "--config_file",
        "c.toml",
        "--dataset_config",
        "d.toml",
    ]


def test_argv_rejects_nonsense():
    with pytest.raises(UsageError):
        build_command(
            backend="kohya", script="s.py", config="c", dataset_config=None, gpus=0, python="p"
        )
    with pytest.raises(UsageError):
        build_command(backend="auto", script="s.py", config="c", dataset_config=None, python="p")


def test_find_sd_scripts_order(tmp_path, monkeypatch):
    flag = make_checkout(tmp_path / "flag")
    env = make_checkout(tmp_path / "env")
    home = make_checkout(tmp_path / "home")
    vendor = make_checkout(tmp_path / "work" / "vendor")
    assert find_sd_scripts(flag, cwd=tmp_path / "work") == flag
    monkeypatch.setenv("KOHYA_SD_SCRIPTS", str(env))
    assert find_sd_scripts(cwd=tmp_path / "work") == env
    monkeypatch.delenv("KOHYA_SD_SCRIPTS")
    assert find_sd_scripts(cwd=tmp_path / "work") == vendor
    assert find_sd_scripts(cwd=tmp_path) == home


def test_find_sd_scripts_errors(tmp_path, monkeypatch):
    with pytest.raises(SdScriptsNotFound) as err:
        find_sd_scripts(tmp_path)
    assert "git clone https://github.com/kohya-ss/sd-scripts" in str(err.value)
    monkeypatch.setenv("KOHYA_SD_SCRIPTS", str(tmp_path / "nope"))
    with pytest.raises(SdScriptsNotFound, match="KOHYA_SD_SCRIPTS"):
        find_sd_scripts(cwd=tmp_path)
    monkeypatch.delenv("KOHYA_SD_SCRIPTS")
    with pytest.raises(SdScriptsNotFound, match="no kohya sd-scripts checkout found"):
        find_sd_scripts(cwd=tmp_path)


def test_find_python_prefers_the_checkouts_venv(tmp_path):
    checkout = make_checkout(tmp_path)
    assert find_python(checkout) == str(checkout / "venv" / "bin" / "python")
    bare = make_checkout(tmp_path / "bare", venv=False)
    assert find_python(bare) == sys.executable
    dotvenv = bare / ".venv" / "bin" / "python"
    dotvenv.parent.mkdir(parents=True)
    dotvenv.write_text("")
    assert find_python(bare) == str(dotvenv)
    assert find_python(bare, "/usr/bin/env") == "/usr/bin/env"
    with pytest.raises(UsageError):
        find_python(bare, tmp_path / "missing-python")


@pytest.mark.parametrize("sdxl", [False, True])
def test_dry_run_picks_the_script_and_prints_the_command(tmp_path, monkeypatch, sdxl):
    checkout = make_checkout(tmp_path)
    config, _dataset = write_configs(tmp_path, sdxl=sdxl)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main,
        ["train", str(config), "--sd-scripts", str(checkout), "--gpus", "4", "--dry-run", "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    argv = data["command"]
    script = "sdxl_train_network.py" if sdxl else "train_network.py"
    assert argv[0] == str(checkout / "venv" / "bin" / "python")
    assert argv[argv.index("--multi_gpu") + 1] == str(checkout / script)
    assert argv[-4:] == [
        "--config_file", str(tmp_path / "runs" / "mylora" / "training_config.toml"),
        "--dataset_config", str(tmp_path / "runs" / "mylora" / "dataset_config.toml"),
    ]  # fmt: skip
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing
    plain = CliRunner().invoke(
        main, ["train", str(config), "--sd-scripts", str(checkout), "--dry-run"]
    )
    assert plain.exit_code == 0 and "accelerate.commands.launch" in plain.output


def test_extra_args_follow_the_configs(tmp_path):
    checkout = make_checkout(tmp_path)
    config, _ = write_configs(tmp_path)
    result = launch.train(
        config, sd_scripts=checkout, cwd=tmp_path, dry_run=True, extra_args=["--resume", "/s"]
    )
    assert result.command[-2:] == ["--resume", "/s"]


def test_auto_backend_falls_back_to_builtin(tmp_path, monkeypatch):
    config, _ = write_configs(tmp_path)
    result = launch.train(config, dry_run=True, cwd=tmp_path)
    assert result.command[-6:-4] == ["-m", "kohyagen.trainer"]
    with pytest.raises(SdScriptsNotFound):
        launch.train(config, dry_run=True, cwd=tmp_path, backend="kohya")


def test_lint_errors_refuse_to_start(tmp_path):
    checkout = make_checkout(tmp_path)
    config, _ = write_configs(tmp_path, extra="train_batch_sise = 2\nresolution_x = 1\n")
    with pytest.raises(LintFailed) as err:
        launch.train(config, sd_scripts=checkout, cwd=tmp_path)
    assert err.value.findings
    result = CliRunner().invoke(main, ["train", str(config), "--sd-scripts", str(checkout)])
    assert result.exit_code == 1
    assert "not starting" in result.output
    as_json = CliRunner().invoke(
        main, ["train", str(config), "--sd-scripts", str(checkout), "--json"]
    )
    assert as_json.exit_code == 1
    findings = json.loads(as_json.stdout)["findings"]
    assert {f["key"] for f in findings} >= {"train_batch_sise"}
    assert not (tmp_path / "runs").exists()


def test_missing_files_are_one_line_errors(tmp_path):
    result = CliRunner().invoke(
        main, ["train", str(tmp_path / "nope.toml"), "--backend", "builtin"]
    )
    assert result.exit_code == 1 and "file not found" in result.output
    config, _ = write_configs(tmp_path)
    result = CliRunner().invoke(
        main, ["train", str(config), "--dataset-config", str(tmp_path / "no.toml"), "--dry-run"]
    )
    assert result.exit_code == 1 and "dataset config not found" in result.output
    result = CliRunner().invoke(
        main, ["train", str(config), "--sd-scripts", str(tmp_path), "--dry-run"]
    )
    assert result.exit_code == 1 and "not a kohya sd-scripts checkout" in result.output


def test_run_dir_numbering(tmp_path):
    first = choose_run_dir("lora", None, cwd=tmp_path)
    assert first == tmp_path / "runs" / "lora"
    first.mkdir(parents=True)
    assert choose_run_dir("lora", None, cwd=tmp_path) == first  # empty folder: reused
    (first / "train.json").write_text(json.dumps({"status": "succeeded"}))
    assert choose_run_dir("lora", None, cwd=tmp_path) == tmp_path / "runs" / "lora-2"
    (tmp_path / "runs" / "lora-2").mkdir()
    (tmp_path / "runs" / "lora-2" / "train.json").write_text("{}")
    assert choose_run_dir("lora", None, cwd=tmp_path) == tmp_path / "runs" / "lora-3"
    assert choose_run_dir("lora", "mine", cwd=tmp_path) == tmp_path / "mine"


def test_explicit_run_dir_that_is_running_is_refused(tmp_path):
    import os

    from kohyagen.errors import RunStateError

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "train.json").write_text(json.dumps({"status": "running", "pid": os.getppid()}))
    with pytest.raises(RunStateError):
        choose_run_dir("x", busy, cwd=tmp_path)
    (busy / "train.json").write_text(json.dumps({"status": "running", "pid": 2**22 + 12345}))
    assert choose_run_dir("x", busy, cwd=tmp_path) == busy  # a dead run's folder is reusable


def test_cli_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    for name in ("train", "report", "pick"):
        assert name in result.output
    result = CliRunner().invoke(main, ["train", "--help"])
    for option in ("--dataset-config", "--sd-scripts", "--python", "--gpus", "--run-dir",
                   "--backend", "--price", "--no-retry", "--dry-run"):  # fmt: skip
        assert option in result.output


@pytest.mark.parametrize("gpus", [1, 4])
@pytest.mark.parametrize("sdxl", [False, True])
def test_pinned_argv_matrix(tmp_path, gpus, sdxl):
    checkout = make_checkout(tmp_path)
    config, _ = write_configs(tmp_path, sdxl=sdxl)
    result = launch.train(config, sd_scripts=checkout, gpus=gpus, cwd=tmp_path, dry_run=True)
    run = tmp_path / "runs" / "mylora"
    script = "sdxl_train_network.py" if sdxl else "train_network.py"
    assert result.status == "dry-run"
    assert result.command == [
        str(checkout / "venv" / "bin" / "python"), "-m", "accelerate.commands.launch",
        "--num_processes", str(gpus), "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", *(["--multi_gpu"] if gpus > 1 else []),
        str(checkout / script),
        "--config_file", str(run / "training_config.toml"),
        "--dataset_config", str(run / "dataset_config.toml"),
    ]  # fmt: skip
