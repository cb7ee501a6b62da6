"""Builders for dataset tests: tiny images, each defect the check must find, clean sets."""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

_colors = itertools.count(1)


def unique_color() -> tuple[int, int, int]:
    """A colour no other image in the test has, so solid images never share bytes."""
    # a 6x6x6 grid with steps of 40: any two colours differ by 40 or more in some channel,
    # so even flat images (which share one dHash) are not near-duplicates
    n = next(_colors) % 216
    return (20 + 40 * (n % 6), 20 + 40 * (n // 6 % 6), 20 + 40 * (n // 36))


def solid(path: Path, size=(600, 600), mode="RGB", fmt=None, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = unique_color()
    if mode == "P":
        im = Image.new("RGB", size, color).convert("P", palette=Image.Palette.ADAPTIVE)
        im.save(path, format=fmt, **save)
        return path
    if mode in ("L", "I;16"):
        color = color[0] * (257 if mode == "I;16" else 1)
    elif mode == "RGBA":
        color = (*color, 0)
    elif mode == "CMYK":
        color = (*color, 10)
    Image.new(mode, size, color).save(path, format=fmt, **save)
    return path


def noise(path: Path, size=(512, 512), seed: int = 0, fmt=None) -> Path:
    """Random pixels: perceptual hashes of different seeds are far apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(arr, "RGB").save(path, format=fmt)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG signature and an IHDR claiming width x height, and nothing else."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    return path


def truncate(src: Path, dest: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


def rotated_jpeg(path: Path, orientation: int = 6, size=(640, 520)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, unique_color())
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif.tobytes())
    return path


def caption(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def build_defect_dataset(root: Path) -> tuple[Path, Path, set[tuple[str, str]]]:
    """A train dir and a reg dir holding one of each defect, and the (code, relative file)
    pairs the default check must report with trigger 'sks' and caption_ext '.txt'."""
    train, reg = root / "train", root / "reg"
    sub = train / "10_sks dog"
    sub.mkdir(parents=True)
    d = "10_sks dog/"

    def good(name: str, **kw) -> Path:
        img = solid(sub / name, **kw)
        caption(img.with_suffix(".txt"), "sks, dog")
        return img

    good1 = good("good1.png")
    good("good2.jpg")
    # image defects
    (sub / "bad.jpg").write_bytes(os.urandom(300))
    (sub / "zero.png").write_bytes(b"")
    truncate(solid(root / "src_full.png", size=(700, 700)), sub / "trunc.png", 0.6)
    truncate(noise(root / "src_full.jpg", size=(600, 600), seed=9), sub / "truncj.jpg", 0.5)
    png_header_only(sub / "bomb.png", 30000, 30000)
    good("cmyk.jpg", mode="CMYK")
    good("gray16.png", mode="I;16")
    good("alpha.png", mode="RGBA")
    good("pal.png", mode="P")
    rotated_jpeg(sub / "rotated.jpg")
    caption(sub / "rotated.txt", "sks, dog")
    good("small.png", size=(200, 200))
    good("wide.png", size=(2400, 600))
    (sub / "zz_dup.png").write_bytes(good1.read_bytes())
    caption(sub / "zz_dup.txt", "sks, dog")
    good("twin.jpg")
    solid(sub / "twin.png")
    solid(sub / "anim.gif", fmt="GIF")
    solid(sub / "Upper.Jpg", fmt="JPEG")
    # caption defects
    solid(sub / "nocap.png")
    caption(good("empty.png").with_suffix(".txt"), b"")
    caption(sub / "orphan.txt", "sks, nobody")
    caption(good("latin.png").with_suffix(".txt"), b"caf\xe9, sks")
    caption(good("nosks.png").with_suffix(".txt"), "a dog, grass")
    caption(good("rep.png").with_suffix(".txt"), "sks, dog, dog")
    caption(good("multi.png").with_suffix(".txt"), "sks, dog\nsecond line\n")
    caption(good("bom.png").with_suffix(".txt"), "\ufeffsks, dog")
    # layout defects
    solid(train / "concept" / "x.png")
    solid(train / "loose.png")
    (train / "5_empty").mkdir()
    solid(sub / "more" / "y.png")
    solid(reg / "1_dog" / "r1.png")

    expected = {
        ("not-an-image", d + "bad.jpg"),
        ("empty-file", d + "zero.png"),
        ("truncated", d + "trunc.png"),
        ("truncated", d + "truncj.jpg"),
        ("decompression-bomb", d + "bomb.png"),
        ("mode-cmyk", d + "cmyk.jpg"),
        ("high-bit-depth", d + "gray16.png"),
        ("alpha-channel", d + "alpha.png"),
        ("mode-palette", d + "pal.png"),
        ("exif-rotation", d + "rotated.jpg"),
        ("too-small", d + "small.png"),
        ("extreme-aspect", d + "wide.png"),
        ("duplicate", d + "zz_dup.png"),
        ("same-stem", d + "twin.png"),
        ("unsupported-format", d + "anim.gif"),
        ("extension-case", d + "Upper.Jpg"),
        ("missing-caption", d + "nocap.png"),
        ("empty-caption", d + "empty.txt"),
        ("orphan-caption", d + "orphan.txt"),
        ("caption-not-utf8", d + "latin.txt"),
        ("trigger-missing", d + "nosks.txt"),
        ("repeated-tag", d + "rep.txt"),
        ("multiline-caption", d + "multi.txt"),
        ("caption-bom", d + "bom.txt"),
        ("skipped-folder", "concept"),
        ("loose-image", "loose.png"),
        ("empty-subset", "5_empty"),
        ("nested-folder", d + "more"),
        ("no-captions", "../reg/1_dog"),
    }
    return train, reg, expected


def build_clean_dataset(root: Path, n: int = 16, ext: str = ".txt") -> Path:
    """Distinct 512x640 JPEGs with captions holding 'sks': nothing to report."""
    sub = root / "10_sks"
    for i in range(n):
        img = noise(sub / f"img {i:02d} é.jpg", size=(512, 640), seed=100 + i)
        caption(img.with_suffix(ext), f"sks, tag{i}, outdoors")
    return root
