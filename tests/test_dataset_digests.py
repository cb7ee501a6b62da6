"""Content hashes only where sizes collide (kohyagen.dataset.digests)."""

from __future__ import annotations

import os

from kohyagen.dataset.check import check_dataset
from kohyagen.dataset.digests import file_digest, with_colliding_digests
from kohyagen.dataset.images import probe_image
from tests.conftest import make_image


def test_only_files_whose_size_collides_are_hashed(tmp_path):
    a = make_image(tmp_path / "a.png", color=(1, 2, 3))
    b = tmp_path / "b.png"
    b.write_bytes(a.read_bytes())  # same bytes, so same size
    c = make_image(tmp_path / "c.png", size=(80, 40), color=(9, 9, 9))
    probes = [probe_image(str(p), digest=False) for p in (a, b, c)]
    assert all(p.digest is None for p in probes)
    done = with_colliding_digests(probes)
    assert done[0].digest == done[1].digest == file_digest(str(a))
    assert done[2].digest is None  # its size is its own: it cannot be a duplicate


def test_check_still_finds_exact_duplicates_and_not_same_size_twins(tmp_path):
    folder = tmp_path / "10_sks"
    a = make_image(folder / "a.png", color=(1, 2, 3))
    (folder / "copy.png").write_bytes(a.read_bytes())
    make_image(folder / "twin.png", color=(1, 2, 3))
    twin = folder / "twin.png"
    data = bytearray(twin.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes (inside the IEND-less tail: still a PNG)
    twin.write_bytes(bytes(data))
    assert os.path.getsize(twin) == os.path.getsize(a)
    report = check_dataset(tmp_path)
    dups = [f for f in report.findings if f.code == "duplicate"]
    assert len(dups) == 1 and "copy.png" in dups[0].file
