"""scripts/comment_density.py: the figure it prints, and the floor the package keeps."""

from __future__ import annotations

from pathlib import Path

from scripts import comment_density as density

SOURCE = '''\
"""A module docstring: documentation, not a comment.

It spans lines.
"""

# a comment that says why
import os  # a trailing comment counts as a comment line too

X = 1  # noqa: E501
Y = [  # type: ignore[misc]
    1,
]


def f() -> int:
    """A docstring."""
    # why f returns what it returns
    return os.getpid()
'''


def test_comments_and_code_are_counted_as_documented():
    count = density.count_source(SOURCE)
    # code: import, X, Y's three lines, def, return; docstrings and blanks are not code
    assert count.code == 7
    # the full-line and trailing comments; the tool pragmas explain nothing
    assert count.comments == 3
    assert round(count.density, 1) == round(300 / 7, 1)


def test_parts_and_overall_add_up(tmp_path: Path):
    pkg = tmp_path / "pkg"
    (pkg / "part").mkdir(parents=True)
    (pkg / "core.py").write_text("x = 1\n# why\ny = 2\n")
    (pkg / "part" / "mod.py").write_text(SOURCE)
    parts = density.measure(pkg)
    assert (parts["core"].code, parts["core"].comments) == (2, 1)
    assert (parts["part"].code, parts["part"].comments) == (7, 3)
    assert (parts["overall"].code, parts["overall"].comments) == (9, 4)


def test_the_package_keeps_five_and_a_half_comment_lines_per_hundred_lines_of_code():
    overall = density.measure()["overall"]
    assert overall.density >= 5.5, (
        f"{overall.density:.1f} comment lines per 100 lines of code: comments that say why "
        "(above all where code follows a kohya quirk) keep the package readable"
    )
