"""Content hashes for the exact-duplicate rule, computed only where they can matter.

Two files can only hold the same bytes when they have the same size, and in a real
dataset sizes rarely collide: hashing every file (a fifth of a default check's time,
measured with benchmarks/dataset_check.py) is spent on files that cannot be duplicates.
So the check probes without hashing and hashes just the files whose size another file
shares.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter
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
    """probes, with a digest added to each one whose size another probe shares."""

    def usable(probe: ImageProbe) -> bool:
        return probe.size_bytes is not None and probe.error != EMPTY_FILE

    sizes = Counter(p.size_bytes for p in probes if usable(p))
    out = []
    for probe in probes:
        if probe.digest is None and usable(probe) and sizes[probe.size_bytes] > 1:
            probe = dataclasses.replace(probe, digest=file_digest(probe.path))
        out.append(probe)
    return out
