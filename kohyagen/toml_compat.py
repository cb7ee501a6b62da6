"""The one place that picks the TOML reader: tomllib, or its backport tomli before 3.11."""

from __future__ import annotations

import sys

# tomllib is tomli merged into the standard library: the same API
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# tomllib and tomlkit recurse once per nested array or inline table: a file nested past
# Python's recursion limit raises RecursionError, which every reader of a user's TOML
# turns into this message
TOO_DEEP = "malformed TOML: arrays or tables nested too deeply"

__all__ = ["TOO_DEEP", "tomllib"]
