"""Version-exact lint: the option table of the sd-scripts checkout found, cached by commit."""

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kohyagen.cli import main
from kohyagen.config.kohya_tables import KohyaTables, cache_root
from kohyagen.config.lint import LintOptions, lint_files

FAKE_SCRIPT = '''
import argparse


def setup_parser():
    p = argparse.ArgumentParser()
    for name in ("pretrained_model_name_or_path", "network_module", "output_dir",
                 "resolution", "train_data_dir", "caption_extension"):
        p.add_argument("--" + name, type=str, default=None)
    p.add_argument("--brand_new_option", type=int, default=3)
    p.add_argument("--mixed_precision", type=str, choices=["no", "fp16"], default="no")
    p.add_argument("--shiny", action="store_true")
    p.add_argument("--network_args", type=str, nargs="*", default=None)
    return p
'''
CONFIG = """
pretrained_model_name_or_path = "runwayml/stable-diffusion-v1-5"
network_module = "networks.lora"
output_dir = "/abs/out"
resolution = "512"
train_data_dir = "/abs/nothing"
brand_new_option = 5
shiny = true
max_train_epochs = 4
"""


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "sd-scripts"
    root.mkdir()
    (root / "train_network.py").write_text(FAKE_SCRIPT)
    return root


def test_checkout_table_is_built_cached_and_used(checkout, tmp_path):
    tables = KohyaTables(checkout, sys.executable)
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    findings = lint_files([cfg], cwd=tmp_path, options=LintOptions(tables=tables))
    unknown = {f.key for f in findings if f.code == "unknown-key"}
    # options of this version are known; one it does not have is unknown to it
    assert "brand_new_option" not in unknown and "shiny" not in unknown
    assert "max_train_epochs" in unknown
    cached = cache_root() / tables.commit / "train_network.args.json"
    assert cached.is_file() and str(cached).startswith(str(tmp_path / "cache"))
    assert {a["dest"] for a in json.loads(cached.read_text())} >= {"brand_new_option", "shiny"}
    # built once: a second lookup of the same commit does not run Python again
    again = KohyaTables(checkout, str(tmp_path / "no-such-python"))
    assert again.properties("train_network")["brand_new_option"]["type"] == "integer"


def test_cli_says_which_version_it_checked_against(checkout, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    result = CliRunner().invoke(
        main, ["lint", str(cfg), "--cwd", str(tmp_path), "--sd-scripts", str(checkout)]
    )
    assert "checked against kohya's options of sd-scripts files-" in result.output
    assert str(checkout) in result.output.splitlines()[-1]


def test_a_checkout_that_cannot_list_its_options_falls_back(checkout, tmp_path):
    (checkout / "train_network.py").write_text("raise ImportError('no torch here')\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    result = CliRunner().invoke(
        main, ["lint", str(cfg), "--cwd", str(tmp_path), "--sd-scripts", str(checkout), "--json"]
    )
    data = json.loads(result.output)
    assert "48d368f (bundled)" in data["checked_against"]
    assert "no torch here" in data["checked_against"]
    assert "brand_new_option" in {f["key"] for f in data["findings"] if f["code"] == "unknown-key"}


def test_without_a_checkout_the_bundled_tables(tmp_path, monkeypatch):
    monkeypatch.delenv("KOHYA_SD_SCRIPTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    result = CliRunner().invoke(main, ["lint", str(cfg)])
    assert result.output.splitlines()[-1] == (
        "checked against kohya's options of sd-scripts 48d368f (bundled)"
    )


@pytest.mark.parametrize(
    "script", ["train_network", "sdxl_train_network", "flux_train_network", "sd3_train_network"]
)
def test_a_checkout_table_types_values_as_the_bundled_schema_does(script):
    """Lint against a found checkout judges each option as the bundled schema does
    (text_encoder_lr = 1e-4 and max_grad_norm percentages included)."""
    from kohyagen.config.arg_schema import argument_property
    from kohyagen.config.schema import training_properties

    facts = Path(__file__).resolve().parent.parent / "facts" / "kohya" / f"{script}.args.json"
    args = json.loads(facts.read_text(encoding="utf-8"))["arguments"]
    bundled = training_properties(script)
    for arg in args:
        expected = {k: v for k, v in bundled[arg["dest"]].items() if k != "x-kohya"}
        assert argument_property(arg) == expected, arg["dest"]


def test_an_unknown_converter_of_a_newer_checkout_accepts_any_toml_value():
    from kohyagen.config.arg_schema import argument_property

    arg = {"dest": "x", "option_strings": ["--x"], "action": "store", "type": "parse_thing",
           "default": None, "nargs": None, "choices": None}  # fmt: skip
    assert argument_property(arg) == {}


def test_a_cache_that_cannot_be_written_still_gives_the_table(checkout, tmp_path, monkeypatch):
    # XDG_CACHE_HOME is a file here, so nothing can be created under it (a read-only or
    # full home behaves alike): the table is still built and used, just not kept
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    tables = KohyaTables(checkout, sys.executable)
    assert tables.properties("train_network")["brand_new_option"]["type"] == "integer"
    assert not tables.failures
