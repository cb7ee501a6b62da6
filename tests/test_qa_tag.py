"""`kohyagen tag` reads the images kohya reads: macOS '._x.png' files are not images."""

from __future__ import annotations

import json

from click.testing import CliRunner
from test_tag_helpers import RED, make_tagger, solid

from kohyagen.cli import main


def test_tag_skips_hidden_appledouble_files(tmp_path):
    tagger = make_tagger(tmp_path / "tagger")
    folder = tmp_path / "images"
    solid(folder / "red.png", RED)
    (folder / "._red.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    result = CliRunner().invoke(main, ["tag", str(folder), "--model", str(tagger), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tagged"] == 1 and not data["failed"], data
    assert not (folder / "._red.txt").exists()


def test_tag_error_is_one_line_without_a_stray_blank_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["tag", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert result.output.startswith("error: "), repr(result.output)
