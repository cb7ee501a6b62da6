"""The layout's import rules (ARCHITECTURE.md), kept by reading every module's imports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from layering import CORE, collect, violations

PACKAGE = Path(__file__).resolve().parent.parent / "kohyagen"
PARTS = (
    "cli", "cloud", "config", "dataset", "estimate", "launch", "report", "run", "tagging", "trainer"
)


def test_the_package_keeps_every_rule():
    assert violations(PACKAGE) == []


def test_each_part_is_a_package_that_says_what_it_owns():
    for part in PARTS:
        init = PACKAGE / part / "__init__.py"
        assert init.is_file(), part
        doc = init.read_text(encoding="utf-8").lstrip()
        assert doc.startswith('"""') and len(doc.split('"""')[1].split()) > 20, part


def test_only_the_core_sits_at_the_top():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert top <= CORE, top - CORE


def test_the_checker_sees_every_module():
    modules, edges = collect(PACKAGE)
    assert "kohyagen.dataset.check" in modules and "kohyagen.trainer.train" in modules
    assert any(e.source == "kohyagen.run.pipeline" for e in edges)


@pytest.fixture
def planted(tmp_path) -> Path:
    copy = tmp_path / "kohyagen"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _plant(path: Path, line: str) -> None:
    text = path.read_text(encoding="utf-8")
    path.write_text(text + "\n" + line + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("dataset/scan.py", "import torch", "imports torch at import time"),
        ("report/logs.py", "from kohyagen.trainer import train", "at import time"),
        ("config/lint.py", "def f():\n    from kohyagen.cli import main", "imports the CLI"),
        ("errors.py", "from kohyagen.dataset import scan", "the core imports"),
        ("dataset/layout.py", "from kohyagen.dataset import check", "import circle"),
        (
            "run/context.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from kohyagen.run.result import RunResult",
            "import circle: kohyagen.run.context ↔ kohyagen.run.result",
        ),
    ],
)
def test_a_planted_violation_is_caught(planted, module, line, expected):
    _plant(planted / module, line)
    found = violations(planted)
    assert any(expected in v for v in found), found


def test_lazy_torch_imports_and_type_checking_blocks_are_allowed(planted):
    _plant(planted / "dataset/scan.py", "def f():\n    import torch")
    _plant(
        planted / "config/lint.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from kohyagen.trainer import train",
    )
    assert violations(planted) == []
