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


def _noisy_jpeg(path, seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95)  # well past the ends a probe reads
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _hashed(monkeypatch) -> list[str]:
    from kohyagen.dataset import digests

    seen: list[str] = []
    real = digests.file_digest

    def counting(path: str) -> str | None:
        seen.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(digests, "file_digest", counting)
    return seen


def test_same_size_files_with_other_ends_are_not_hashed(tmp_path, monkeypatch):
    a = _noisy_jpeg(tmp_path / "a.jpg", 1)
    b = bytearray(a)
    b[30] ^= 0x01  # inside the quantisation table: other bytes, same size
    (tmp_path / "b.jpg").write_bytes(bytes(b))
    (tmp_path / "c.jpg").write_bytes(a)  # an exact copy
    probes = [probe_image(str(tmp_path / n), digest=False) for n in ("a.jpg", "b.jpg", "c.jpg")]
    assert len({p.ends_key for p in probes}) == 2
    seen = _hashed(monkeypatch)
    done = with_colliding_digests(probes)
    assert sorted(seen) == ["a.jpg", "c.jpg"]
    assert done[0].digest == done[2].digest and done[1].digest is None


def test_same_ends_other_middle_is_hashed_and_not_a_duplicate(tmp_path, monkeypatch):
    (tmp_path / "10_x").mkdir()
    a = _noisy_jpeg(tmp_path / "10_x" / "a.jpg", 2)
    b = bytearray(a)
    b[len(b) // 2] ^= 0x01  # in the scan data, far from both ends
    (tmp_path / "10_x" / "b.jpg").write_bytes(bytes(b))
    seen = _hashed(monkeypatch)
    report = check_dataset(tmp_path)
    assert sorted(seen) == ["a.jpg", "b.jpg"]
    assert not [f for f in report.findings if f.code == "duplicate"]


def test_ends_key_is_the_same_however_the_file_was_read(tmp_path):
    data = _noisy_jpeg(tmp_path / "a.jpg", 3)
    (tmp_path / "b.jpg").write_bytes(data[:-2] + b"\x00\x00")  # no end marker: read whole
    whole = probe_image(str(tmp_path / "b.jpg"), digest=False)
    ends = probe_image(str(tmp_path / "a.jpg"), digest=False)
    assert whole.error == "truncated" and ends.error is None
    from kohyagen.dataset.file_ends import TAIL, ends_key

    assert ends.ends_key == ends_key(data, data[-TAIL:])
    broken = (tmp_path / "b.jpg").read_bytes()
    assert whole.ends_key == ends_key(broken, broken[-TAIL:])
