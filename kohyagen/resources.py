"""The one place that finds templates/ and schemas/.

In a built wheel they live inside the package (kohyagen/templates, kohyagen/schemas);
in a source checkout or an editable install they sit at the repository root.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from kohyagen.errors import KohyagenError

_PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def _resource_dir(name: str) -> Path:
    # the wheel's copy inside the package first, then the checkout's root (editable installs)
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise KohyagenError(
        f"kohyagen's {name}/ folder is missing from the installation",
        path=_PACKAGE_DIR,
        hint="reinstall kohyagen (pip install --force-reinstall kohyagen)",
    )


def templates_dir() -> Path:
    return _resource_dir("templates")


def schemas_dir() -> Path:
    return _resource_dir("schemas")


def template_path(name: str) -> Path:
    return templates_dir() / name


def schema_path(name: str) -> Path:
    return schemas_dir() / name
