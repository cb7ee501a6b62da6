"""Content hashes for the exact-duplicate rule, computed only where they can matter.

Two files can only hold the same bytes when they have the same size, and in a real
dataset sizes rarely collide: hashing every file (a fifth of a default check's time,
measured with benchmarks/dataset_check.py) is spent on files that cannot be duplicates.
So the check probes without hashing and hashes just the files whose size another file
shares, and of those only the ones whose first and last bytes (file_ends.ends_key, taken
from what the probe read anyway) match too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Sequence

from kohyagen import safe_io
from kohyagen.dataset.images import EMPTY_FILE, ImageProbe

_CHUNK = 4 * 1024 * 1024


def file_digest(path: str) -> str | None:
    """sha256 of a regular file's bytes; None when it cannot be read."""
    try:
        fd, st = safe_io.open_fd(path)
    except OSError:
        return None
    try:
        digest = hashlib.sha256()
        # os.read allocates the size it is asked for: ask for what the file holds
        want = min(max(st.st_size + 1, 65536), _CHUNK)
        while chunk := os.read(fd, want):
            digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return None
    finally:
        os.close(fd)


def with_colliding_digests(probes: Sequence[ImageProbe]) -> list[ImageProbe]:
    """probes, with a digest added to each one that may share its bytes with another:
    the same size, and the same ends_key where both probes have one."""
    groups: dict[int, list[ImageProbe]] = defaultdict(list)
    for probe in probes:
        if probe.size_bytes is not None and probe.error != EMPTY_FILE:
            groups[probe.size_bytes].append(probe)
    suspects: set[int] = set()
    for group in groups.values():
        if len(group) > 1:
            keys = Counter(p.ends_key for p in group)
            # a probe without a key may match any other of its size
            suspects.update(
                id(p) for p in group if p.ends_key is None or keys[None] or keys[p.ends_key] > 1
            )
    return [
        dataclasses.replace(p, digest=file_digest(p.path))
        if p.digest is None and id(p) in suspects
        else p
        for p in probes
    ]
