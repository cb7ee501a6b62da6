"""scripts/extract_kohya_args.py against a fake sd-scripts checkout written here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import extract_kohya_args as extract

HELPERS = """\
import argparse


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--console_log_level", type=str, default=None, choices=["DEBUG", "INFO"]
    )
    parser.add_argument("--console_log_simple", action="store_true")
"""

SCRIPT = """\
import argparse
from pathlib import Path

import heavy_gpu_lib  # stands for torchvision & co: stubbed by the test
from library.utils import add_logging_arguments


def int_or_float(value):
    return float(value) if "." in value else int(value)


def setup_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_logging_arguments(parser)
    parser.add_argument("--network_dim", type=int, default=None)
    parser.add_argument("--learning_rate", type=float, default=2e-6)
    parser.add_argument("--optimizer_args", type=str, default=None, nargs="*")
    parser.add_argument("--lr_warmup_steps", type=int_or_float, default=0)
    parser.add_argument("--no_half_vae", action="store_false", dest="half_vae")
    parser.add_argument("--mode", choices=["a", "b"], default="a", metavar="MODE")
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--tag", action="append")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False)
    return parser


if __name__ == "__main__":
    setup_parser().parse_args()
"""


def _row(dest: str, line: str, function: str = "setup_parser", **kw: object) -> dict:
    row = {
        "dest": dest,
        "option_strings": [f"--{dest}"],
        "action": "store",
        "type": None,
        "default": None,
        "nargs": None,
        "choices": None,
        "required": False,
        "const": None,
        "metavar": None,
        "defined_at": line,
        "defined_in_function": function,
    }
    row.update(kw)
    return row


EXPECTED = [
    _row("console_log_level", "library/utils.py:5", "add_logging_arguments",
         type="str", choices=["DEBUG", "INFO"]),
    _row("console_log_simple", "library/utils.py:8", "add_logging_arguments",
         action="store_true", default=False, nargs=0, const=True),
    _row("network_dim", "train_network.py:15", type="int"),
    _row("learning_rate", "train_network.py:16", type="float", default=2e-6),
    _row("optimizer_args", "train_network.py:17", type="str", nargs="*"),
    _row("lr_warmup_steps", "train_network.py:18", type="int_or_float", default=0),
    _row("half_vae", "train_network.py:19", action="store_false", default=True, nargs=0,
         const=False, option_strings=["--no_half_vae"]),
    _row("mode", "train_network.py:20", choices=["a", "b"], default="a", metavar="MODE"),
    _row("out", "train_network.py:21", type="Path", default="out"),
    _row("tag", "train_network.py:22", action="append"),
    _row("flip", "train_network.py:23", action="boolean_optional", default=False, nargs=0,
         option_strings=["--flip", "--no-flip"]),
]  # fmt: skip


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "sd-scripts"
    (root / "library").mkdir(parents=True)
    (root / "library" / "__init__.py").write_text("")
    (root / "library" / "utils.py").write_text(HELPERS)
    (root / "train_network.py").write_text(SCRIPT)
    return root


def _venv_python(checkout: Path, marker: Path) -> Path:
    """A venv/bin/python that notes it was used, then runs this interpreter."""
    python = checkout / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho used > "{marker}"\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return python


def test_the_table_matches_the_parser_in_the_checkouts_own_python(checkout, tmp_path):
    marker = tmp_path / "venv-used"
    python = _venv_python(checkout, marker)
    assert extract.checkout_python(checkout) == str(python)
    out = tmp_path / "train_network.args.json"
    code = extract.main(
        ["--sd-scripts", str(checkout), "--script", "train_network.py", "-o", str(out),
         "--stub", "heavy_gpu_lib"]
    )  # fmt: skip
    assert code == 0 and marker.is_file()
    table = json.loads(out.read_text(encoding="utf-8"))
    assert table["arguments"] == EXPECTED
    assert table["argument_count"] == len(EXPECTED)
    assert table["script"] == "train_network.py"
    assert table["notes"] == extract.GENERIC_NOTES
    assert "stubbed: heavy_gpu_lib" in table["extraction_method"]
    assert table["commit_sha"] is None  # not a git checkout
    assert list(table) == list(json.loads(_real_table().read_text(encoding="utf-8")))


def _real_table() -> Path:
    return Path(__file__).resolve().parent.parent / "facts" / "kohya" / "train_network.args.json"


def test_the_commit_is_read_from_git_and_existing_notes_are_kept(checkout, tmp_path):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}  # fmt: skip
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "fake kohya"],
                ["remote", "add", "origin", "https://github.com/kohya-ss/sd-scripts.git"]):  # fmt: skip
        subprocess.run(["git", "-C", str(checkout), *cmd], check=True, env=env)
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    out = tmp_path / "table.json"
    out.write_text(json.dumps({"notes": ["a fact someone wrote"]}), encoding="utf-8")
    args = ["--sd-scripts", str(checkout), "--script", "train_network.py", "-o", str(out)]
    assert extract.main([*args, "--stub", "heavy_gpu_lib"]) == 0
    table = json.loads(out.read_text(encoding="utf-8"))
    assert table["commit_sha"] == head and table["commit_subject"] == "fake kohya"
    assert table["source_repo"] == "kohya-ss/sd-scripts"
    assert table["notes"] == ["a fact someone wrote"]


def test_an_import_failure_names_the_script_and_the_fix(checkout, capsys):
    with pytest.raises(SystemExit) as exc:
        extract.main(["--sd-scripts", str(checkout), "--script", "train_network.py"])
    message = str(exc.value)
    assert "train_network.py" in message and "heavy_gpu_lib" in message
    assert "--stub NAME" in message


def test_a_missing_script_is_refused(checkout, capsys):
    assert extract.main(["--sd-scripts", str(checkout), "--script", "nope.py"]) == 1
    assert "nope.py does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://github.com/kohya-ss/sd-scripts.git", "kohya-ss/sd-scripts"),
        ("git@github.com:kohya-ss/sd-scripts.git", "kohya-ss/sd-scripts"),
        (None, None),
    ],
)
def test_repo_name_from_a_remote(url, name):
    assert extract.repo_name(url) == name
