"""Files kohyagen writes are readable like any other file the user makes (umask, not 0600)."""

from __future__ import annotations

import os
import stat

import pytest

from kohyagen.atomic import write_text_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield 0o644
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_rendered_configs_follow_the_umask(tmp_path, umask_022):
    from PIL import Image

    from kohyagen.config.render import render_configs, write_configs

    data = tmp_path / "data" / "10_sks"
    data.mkdir(parents=True)
    Image.new("RGB", (512, 512)).save(data / "a.png")
    rendered = render_configs(
        tmp_path / "data", model="sd15", gpu="24gb", out_dir=tmp_path / "cfg", samples=True
    )
    for path in write_configs(rendered):
        assert _mode(path) == umask_022, path


def test_write_text_atomic_replaces_and_cleans_up(tmp_path, umask_022):
    target = tmp_path / "sub" / "a.txt"
    write_text_atomic(target, "one\n")
    write_text_atomic(target, "two\n")
    assert target.read_text() == "two\n" and _mode(target) == umask_022

    with pytest.raises(TypeError):
        write_text_atomic(target, 3)  # type: ignore[arg-type]
    assert target.read_text() == "two\n"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]
