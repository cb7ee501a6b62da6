"""Probing single images and captions: header facts, perceptual hashes, caption parsing."""

from __future__ import annotations

import io

from dataset_fixtures import caption, noise, rotated_jpeg, solid
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from kohyagen.dataset.captions import (
    contains_trigger,
    read_caption,
    repeated_tags,
    tag_frequencies,
    trigger_first,
)
from kohyagen.dataset.containers import header_size
from kohyagen.dataset.images import probe_image
from kohyagen.dataset.perceptual import dhash_of, hamming, near_duplicate_pairs


@given(st.lists(st.integers(0, 2**64 - 1), max_size=40), st.integers(0, 64))
def test_near_duplicate_pairs_match_brute_force(hashes, limit):
    expected = [
        (i, j, (a ^ b).bit_count())
        for i, a in enumerate(hashes)
        for j, b in enumerate(hashes)
        if i < j and (a ^ b).bit_count() <= limit
    ]
    assert sorted(near_duplicate_pairs(hashes, limit)) == expected


def test_dhash_survives_resizing_and_recompression_but_separates_pictures(tmp_path):
    # photos have strong low-frequency structure: coarse noise, smoothly enlarged
    a = Image.open(noise(tmp_path / "a.png", size=(16, 12), seed=1)).convert("RGB")
    smooth = a.resize((640, 480), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    smooth.save(buf, "JPEG", quality=60)
    again = Image.open(io.BytesIO(buf.getvalue()))
    half = again.resize((320, 240))
    assert hamming(dhash_of(again), dhash_of(half)) <= 4
    other = Image.open(noise(tmp_path / "b.png", size=(16, 12), seed=2)).resize((640, 480))
    assert hamming(dhash_of(smooth), dhash_of(other)) >= 12


def test_cheap_and_decoded_hashes_agree_for_jpeg(tmp_path):
    src = Image.open(noise(tmp_path / "n.png", size=(64, 48), seed=5)).resize((1024, 768))
    src.save(tmp_path / "big.jpg", quality=90)
    cheap = probe_image(str(tmp_path / "big.jpg"), perceptual=True).dhash
    full = probe_image(str(tmp_path / "big.jpg"), deep=True, perceptual=True).dhash
    assert cheap is not None and hamming(cheap, full) <= 6


def test_probe_reports_header_facts_without_decoding(tmp_path):
    probe = probe_image(str(rotated_jpeg(tmp_path / "r.jpg", orientation=8, size=(300, 200))))
    assert (probe.format, probe.width, probe.height, probe.mode) == ("JPEG", 300, 200, "RGB")
    assert probe.orientation == 8 and not probe.decoded and probe.error is None
    assert len(probe.digest) == 64
    rgba = probe_image(str(solid(tmp_path / "a.png", size=(10, 10), mode="RGBA")))
    assert rgba.has_alpha and rgba.alpha_used is None
    deep = probe_image(str(tmp_path / "a.png"), deep=True)
    assert deep.decoded and deep.alpha_used is True


def test_header_size_reads_png_jpeg_and_webp():
    cases = [("PNG", "RGB", {}), ("JPEG", "RGB", {}), ("WEBP", "RGB", {}),
             ("WEBP", "RGB", {"lossless": True}), ("WEBP", "RGBA", {})]  # fmt: skip
    for fmt, mode, options in cases:
        buf = io.BytesIO()
        Image.new(mode, (123, 45), (1, 2, 3)).save(buf, fmt, **options)
        assert header_size(buf.getvalue()) == (123, 45), (fmt, mode, options)
    assert header_size(b"junk") == (0, 0)


def test_read_caption_the_way_kohya_does(tmp_path):
    plain = read_caption(caption(tmp_path / "a.txt", "sks, dog\n"))
    assert plain.text == "sks, dog" and plain.tags == ["sks", "dog"]
    multi = read_caption(caption(tmp_path / "b.txt", "first\n\nsecond\nthird"))
    assert multi.text == "first" and multi.extra_lines == 2
    empty = read_caption(caption(tmp_path / "c.txt", b""))
    assert empty.no_lines and not empty.blank
    blank = read_caption(caption(tmp_path / "d.txt", "\n tags on line two"))
    assert blank.blank and not blank.no_lines
    bom = read_caption(caption(tmp_path / "e.txt", "\ufeffsks, dog"))
    assert bom.has_bom and bom.text == "sks, dog"
    latin = read_caption(caption(tmp_path / "f.txt", b"caf\xe9"))
    assert latin.not_utf8 and latin.text is None
    missing = read_caption(tmp_path / "nope.txt")
    assert missing.error


def test_trigger_handling():
    assert contains_trigger("sks, dog", "sks")
    assert contains_trigger("a photo of sks dog", "sks")
    assert contains_trigger("SKS, dog", "sks")
    assert not contains_trigger("sksx, dog", "sks")
    assert not contains_trigger("a dog", "sks")
    assert trigger_first("dog, sks, grass", "sks") == "sks, dog, grass"
    assert trigger_first("", "sks") == "sks"
    assert trigger_first("sks, sks, dog", "sks") == "sks, dog"
    assert repeated_tags(["a", "b", "A", "c", "b"]) == ["a", "b"]
    assert tag_frequencies(["a, b", "b, c, b", ""]) == {"b": 2, "a": 1, "c": 1}


def test_exif_rotation_finding_says_which_trainer_applies_it(tmp_path):
    from PIL import Image

    from kohyagen.dataset.check import check_dataset

    folder = tmp_path / "10_sks"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    Image.new("RGB", (640, 512), (10, 20, 30)).save(folder / "r.jpg", exif=exif)
    (folder / "r.txt").write_text("sks\n")
    report = check_dataset(tmp_path)
    [finding] = [f for f in report.findings if f.code == "exif-rotation"]
    assert "kohya ignores it" in finding.message
    assert "builtin trainer applies it" in finding.message
