"""The one place that picks the TOML reader: tomllib, or its backport tomli before 3.11."""

from __future__ import annotations

import sys

# tomllib is tomli merged into the standard library: the same API
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["tomllib"]
