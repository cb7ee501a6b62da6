"""The CLI imports a command's module only when that command runs (start-up time)."""

from __future__ import annotations

import importlib
import subprocess
import sys

from click.testing import CliRunner

from kohyagen.cli import LAZY_COMMANDS, main


def test_lazy_table_names_every_command_of_its_module():
    for module_name in set(LAZY_COMMANDS.values()):
        module = importlib.import_module(f"kohyagen.cli.{module_name}")
        for command in module.COMMANDS:
            assert LAZY_COMMANDS.get(command.name) == module_name, command.name
    claimed = set(LAZY_COMMANDS)
    defined = {
        c.name
        for m in set(LAZY_COMMANDS.values())
        for c in importlib.import_module(f"kohyagen.cli.{m}").COMMANDS
    }
    assert claimed == defined


def test_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for name in LAZY_COMMANDS:
        if not main.commands[name].hidden:  # --help loaded every command
            assert f"  {name} " in result.output, name


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2 and "No such command" in result.output


def test_dataset_check_imports_no_other_command_module(tmp_path):
    """`kohyagen dataset check` in a fresh interpreter leaves the other commands (and the
    process pool machinery a default check does not use) unimported."""
    (tmp_path / "10_x").mkdir()
    code = (
        "import sys\n"
        "from kohyagen.cli import main\n"
        f"try:\n    main(['dataset', 'check', {str(tmp_path)!r}, '--json'])\n"
        "except SystemExit:\n    pass\n"
        "print(' '.join(sorted(m for m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    loaded = set(done.stdout.splitlines()[-1].split())
    assert "kohyagen.cli.dataset_cmd" in loaded, done.stderr
    for other in ("tag_cmd", "train_cmd", "run_cmd", "cloud_cmd", "config_cmd"):
        assert f"kohyagen.cli.{other}" not in loaded
    for heavy in ("concurrent.futures.process", "multiprocessing", "kohyagen.dataset.prepare"):
        assert heavy not in loaded, heavy
