"""`kohyagen train` lints against the option table of the sd-scripts checkout it will run.

The fake checkout's train_network.py gets a setup_parser() that builds kohya's own
48d368f table (facts/kohya/train_network.args.json) as a parser would, with one option
added or taken away: a newer or older sd-scripts. KohyaTables runs it in the checkout's
venv Python, as it runs a real checkout's.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from train_fixtures import make_checkout, write_configs

from kohyagen.cli import main
from kohyagen.errors import LintFailed
from kohyagen.launch import train as launch

# Appended to the fake train_network.py: kohya's table rebuilt as argparse actions, with
# the converters' names kept (the table types int_or_float options by that name).
SETUP_PARSER = """

def setup_parser():
    import argparse
    import json

    def converter(name):
        def convert(text):
            return text
        convert.__name__ = name
        return convert

    parser = argparse.ArgumentParser()
    with open(FACTS_PATH, encoding="utf-8") as f:
        table = json.load(f)["arguments"]
    for arg in table:
        if arg["dest"] in DROPPED:
            continue
        if arg["action"] != "store":
            parser.add_argument(*arg["option_strings"], dest=arg["dest"], action=arg["action"])
            continue
        kind = {"int": int, "float": float, "str": str}.get(arg["type"]) or converter(arg["type"])
        extra = {"nargs": arg["nargs"]} if arg["nargs"] is not None else {}
        parser.add_argument(*arg["option_strings"], dest=arg["dest"], type=kind,
                            default=arg["default"], choices=arg["choices"], **extra)
    for name, kind in ADDED:
        parser.add_argument("--" + name, type={"int": int, "str": str}[kind], default=None)
    return parser
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("KOHYA_SD_SCRIPTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr("kohyagen.launch.checkout._PACKAGE_ROOT", tmp_path / "kohyagen-checkout")


def _versioned_checkout(tmp_path, shared_dir, *, added=(), dropped=()):
    """A fake checkout whose setup_parser() is 48d368f's table with options added/dropped."""
    checkout = make_checkout(tmp_path)
    script = checkout / "train_network.py"
    code = (
        SETUP_PARSER.replace(
            "FACTS_PATH", repr(str(shared_dir / "kohya" / "train_network.args.json"))
        )
        .replace("DROPPED", repr(set(dropped)))
        .replace("ADDED", repr(list(added)))
    )
    script.write_text(script.read_text() + code)
    return checkout


def test_an_option_only_the_checkout_has_is_not_unknown(tmp_path, shared_dir):
    checkout = _versioned_checkout(tmp_path, shared_dir, added=[("brand_new_option", "int")])
    config, _ = write_configs(tmp_path, extra="brand_new_option = 5\n")
    result = launch.train(config, sd_scripts=checkout, cwd=tmp_path, dry_run=True)
    assert result.status == "dry-run"
    assert "brand_new_option" not in {f.key for f in result.lint}
    assert result.checked_against.startswith("kohya's options of sd-scripts files-")
    assert str(checkout) in result.checked_against
    cli = CliRunner().invoke(
        main, ["train", str(config), "--sd-scripts", str(checkout), "--dry-run", "--json"]
    )
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)["checked_against"] == result.checked_against
    # the bundled 48d368f table does not know it: the builtin backend still refuses it
    with pytest.raises(LintFailed) as err:
        launch.train(config, backend="builtin", cwd=tmp_path, dry_run=True)
    assert "brand_new_option" in {f.key for f in err.value.findings if f.code == "unknown-key"}
    assert err.value.checked_against == "kohya's options of sd-scripts 48d368f (bundled)"


def test_an_option_the_checkout_lacks_is_unknown(tmp_path, shared_dir):
    checkout = _versioned_checkout(tmp_path, shared_dir, dropped=["max_train_epochs"])
    config, _ = write_configs(tmp_path)  # max_train_epochs = 5: bundled 48d368f has it
    with pytest.raises(LintFailed) as err:
        launch.train(config, sd_scripts=checkout, cwd=tmp_path, dry_run=True)
    unknown = {f.key for f in err.value.findings if f.code == "unknown-key"}
    assert unknown == {"max_train_epochs"}
    assert str(checkout) in err.value.checked_against
    assert not (tmp_path / "runs").exists()
    cli = CliRunner().invoke(main, ["train", str(config), "--sd-scripts", str(checkout)])
    assert cli.exit_code == 1
    assert "max_train_epochs" in cli.output and "checked against kohya's options" in cli.output
    as_json = CliRunner().invoke(
        main, ["train", str(config), "--sd-scripts", str(checkout), "--dry-run", "--json"]
    )
    data = json.loads(as_json.stdout)
    assert data["status"] == "lint-failed" and str(checkout) in data["checked_against"]
    # the same config with the bundled table, as the builtin trainer is judged: clean
    assert launch.train(config, backend="builtin", cwd=tmp_path, dry_run=True).status == "dry-run"


def test_a_checkout_that_cannot_list_its_options_falls_back_and_says_so(tmp_path):
    checkout = make_checkout(tmp_path)  # the plain fake: no setup_parser()
    config, _ = write_configs(tmp_path)
    result = launch.train(config, sd_scripts=checkout, cwd=tmp_path, dry_run=True)
    assert result.checked_against.startswith("kohya's options of sd-scripts 48d368f (bundled)")
    assert "could not list its own" in result.checked_against
    assert "setup_parser" in result.checked_against  # the checkout's own error, last line
    plain = CliRunner().invoke(main, ["train", str(config), "--sd-scripts", str(checkout),
                                      "--dry-run"])  # fmt: skip
    assert plain.exit_code == 0
    assert plain.stdout.startswith(str(checkout / "venv" / "bin" / "python"))
    assert "lint: checked against" not in plain.stdout  # stderr: the command stays alone
    assert "lint: checked against kohya's options of sd-scripts 48d368f" in plain.stderr


def test_the_checkout_table_is_built_once_per_commit(tmp_path, shared_dir):
    checkout = _versioned_checkout(tmp_path, shared_dir, added=[("brand_new_option", "int")])
    config, _ = write_configs(tmp_path, extra="brand_new_option = 5\n")
    launch.train(config, sd_scripts=checkout, cwd=tmp_path, dry_run=True)
    # the venv gone, the cached table (same files, same commit) still judges the config
    (checkout / "venv" / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")
    again = launch.train(config, sd_scripts=checkout, cwd=tmp_path, dry_run=True)
    assert again.status == "dry-run" and str(checkout) in again.checked_against
