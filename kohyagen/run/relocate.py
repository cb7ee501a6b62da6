"""Moving a run folder between machines: prepare on a laptop, train on a rented GPU.

Run folders hold absolute paths (kohya needs them in its configs). When a run folder is
found somewhere other than where it was made, or its images are passed from another
place with the same content, the recorded paths are rewritten in the manifest and in
the two configs, so that `kohyagen run` (or `kohyagen queue`) continues there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kohyagen.atomic import write_text_atomic

CONFIG_FILES = ("training_config.toml", "dataset_config.toml")


def _swap(value: str, old: str, new: str) -> str:
    if value == old:
        return new
    # only whole path components: /data/run must not rewrite /data/run2
    if value.startswith(old + os.sep) or value.startswith(old + "/"):
        return new + value[len(old) :]
    return value


def rewrite(data: Any, old: str, new: str) -> Any:
    """data with every string that is old, or a path under old, moved under new."""
    if isinstance(data, str):
        return _swap(data, old, new)
    if isinstance(data, list):
        return [rewrite(v, old, new) for v in data]
    if isinstance(data, dict):
        return {k: rewrite(v, old, new) for k, v in data.items()}
    return data


def _rewrite_toml(path: Path, moves: list[tuple[str, str]]) -> bool:
    import tomlkit
    from tomlkit.items import AoT, Array, String, Table

    # tomlkit keeps the comments that explain each rendered value
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    changed = False

    def walk(node: Any) -> None:
        nonlocal changed
        items = (
            list(node.items())
            if isinstance(node, (dict, Table))
            else list(enumerate(node))
            if isinstance(node, (list, Array, AoT))
            else []
        )
        for key, value in items:
            if isinstance(value, (str, String)):
                text = str(value)
                for old, new in moves:
                    text = _swap(text, old, new)
                if text != str(value):
                    node[key] = text
                    changed = True
            else:
                walk(value)

    walk(doc)
    if changed:
        write_text_atomic(path, tomlkit.dumps(doc))
    return changed


def relocate(manifest: Any, moves: list[tuple[str, str]]) -> list[str]:
    """Apply (old prefix, new prefix) moves to the manifest and the run's configs.

    Returns the files that changed. The manifest is saved atomically."""
    # nothing moved: nothing to write
    moves = [(old, new) for old, new in moves if old != new]
    if not moves:
        return []
    data = manifest.data
    for old, new in moves:
        data = rewrite(data, old, new)
    manifest.data = data
    manifest.save()
    changed = [str(manifest.path)]
    for name in CONFIG_FILES:
        path = manifest.run_dir / name
        if path.is_file() and _rewrite_toml(path, moves):
            changed.append(str(path))
    return changed
