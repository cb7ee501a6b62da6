"""Images, captions, buckets and batches, following kohya's DreamBooth dataset rules.

Every image is assigned an aspect-ratio bucket (or the fixed resolution without
bucketing), is repeated num_repeats times per epoch, and batches are drawn
from one bucket at a time. Captions come from the first line of the caption
file, else the subset's class tokens. A validation split takes images off each
non-reg subset as kohya does.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from kohyagen.dataset.buckets import BucketSettings, bucket_resolutions
from kohyagen.dataset.buckets import select_bucket as shared_select_bucket
from kohyagen.dataset.layout import list_images
from kohyagen.errors import DatasetError
from kohyagen.trainer.augment import face_from_name
from kohyagen.trainer.captions import read_caption
from kohyagen.trainer.dataset_spec import DatasetSpec, SubsetSpec


@dataclass(frozen=True)
class ImageItem:
    path: Path
    caption: str
    subset: SubsetSpec
    original_size: tuple[int, int]  # (w, h)
    bucket: tuple[int, int]  # (w, h)
    # No bucketing, random_crop, image larger than the resolution: cut a resolution-sized
    # window out at full scale instead of resizing (kohya's no-bucket random crop).
    native_crop: bool = False
    # face_crop_aug_range without bucketing: the face box (cx, cy, w, h) from the file name.
    face: tuple[int, int, int, int] | None = None

    @property
    def uncropped(self) -> bool:
        """The pixels are a window cut at full or face scale: kohya then reports the
        window itself as the original size, with no crop offset."""
        return self.native_crop or self.face is not None

    @property
    def is_reg(self) -> bool:
        return self.subset.is_reg


def make_buckets(
    max_reso: tuple[int, int], min_size: int, max_size: int, steps: int
) -> list[tuple[int, int]]:
    """kohya's fixed bucket list (used when upscaling is allowed), from kohyagen.dataset.buckets."""
    return list(bucket_resolutions(tuple(max_reso), min_size, max_size, steps))


def select_bucket(
    size: tuple[int, int],
    buckets: list[tuple[int, int]],
    *,
    max_reso: tuple[int, int],
    steps: int,
    no_upscale: bool,
    min_size: int | None = None,
    max_size: int | None = None,
) -> tuple[int, int]:
    """The bucket kohya puts the image in: the rule `kohyagen dataset check` reports.

    min_size/max_size are the dataset's min/max_bucket_reso; without them they are read
    off buckets (the list make_buckets returned for them).
    """
    if min_size is None or max_size is None:
        sides = [side for bucket in buckets for side in bucket] or [steps]
        min_size = min(sides) if min_size is None else min_size
        max_size = max(sides) if max_size is None else max_size
    settings = BucketSettings((max_reso[0], max_reso[1]), min_size, max_size, steps, no_upscale)
    bw, bh = shared_select_bucket(size[0], size[1], settings)
    # kohya makes a 0-wide bucket of an image narrower than one step, and fails later.
    return max(steps, bw), max(steps, bh)


def split_validation(
    images: list[Path], split: float, seed: int | None, *, training: bool
) -> list[Path]:
    """kohya's per-subset split: train = first ceil(n(1-s)), validation = last round(n s)."""
    if split <= 0:
        return images if training else []
    shuffled = list(images)
    # kohya shuffles with validation_seed when set, else from the global RNG: the same split
    # is reproduced only with a seed (train_util.py:142-178)
    (random.Random(seed) if seed is not None else random).shuffle(shuffled)
    n = len(shuffled)
    if training:
        return shuffled[: math.ceil(n * (1 - split))]
    # round, not the complement of ceil: as in kohya, one image can land in both halves
    take = round(n * split)
    return shuffled[n - take :] if take else []


@dataclass(frozen=True)
class PreparedDataset:
    spec: DatasetSpec
    items: tuple[ImageItem, ...]
    training: bool

    @property
    def train_count(self) -> int:
        # kohya's `num train images * repeats`: reg images are counted apart
        return sum(it.subset.num_repeats for it in self.items if not it.is_reg)

    @property
    def reg_count(self) -> int:
        return sum(1 for it in self.items if it.is_reg)


@dataclass(frozen=True)
class PreparedGroup:
    """Several [[datasets]] trained together, as kohya's dataset group."""

    parts: tuple[PreparedDataset, ...]

    @property
    def items(self) -> tuple[ImageItem, ...]:
        return tuple(it for part in self.parts for it in part.items)

    @property
    def train_count(self) -> int:
        return sum(part.train_count for part in self.parts)

    @property
    def reg_count(self) -> int:
        return sum(part.reg_count for part in self.parts)


def _bucket_list(spec: DatasetSpec) -> list[tuple[int, int]]:
    """kohya's bucket resolutions for this dataset; none when bucketing is off."""
    res = spec.resolution
    if not spec.enable_bucket:
        return []
    settings = BucketSettings(
        res, spec.min_bucket_reso, spec.max_bucket_reso, spec.bucket_reso_steps
    )
    problems = settings.problems()
    if min(res) < spec.min_bucket_reso or max(res) > spec.max_bucket_reso or problems:
        raise DatasetError(
            problems[0]
            if problems
            else f"resolution {res} is outside min_bucket_reso {spec.min_bucket_reso} .."
            f" max_bucket_reso {spec.max_bucket_reso}",
            hint="set min_bucket_reso/max_bucket_reso to multiples of bucket_reso_steps "
            "around the resolution",
        )
    return make_buckets(res, spec.min_bucket_reso, spec.max_bucket_reso, spec.bucket_reso_steps)


def _subset_images(spec: DatasetSpec, subset: SubsetSpec, training: bool) -> list[Path]:
    """The subset's images on this side of the validation split."""
    if not subset.image_dir.is_dir():
        raise DatasetError("image folder not found", path=subset.image_dir)
    images = list_images(subset.image_dir)
    if not subset.is_reg:
        return split_validation(
            images, spec.validation_split, spec.validation_seed, training=training
        )
    if not training:
        return []  # kohya never validates on reg images
    return images


def _image_size(image: Path) -> tuple[int, int]:
    """The image's size as it will be loaded."""
    from PIL import Image

    try:
        with Image.open(image) as im:
            size = im.size
            # Rotated by its EXIF orientation when loaded, so bucket it rotated too.
            if im.getexif().get(0x0112) in (5, 6, 7, 8):
                size = (size[1], size[0])
    except OSError as exc:
        raise DatasetError("cannot read image", path=image, hint="remove or re-save it") from exc
    return size


def _unbucketed_item(
    image: Path, subset: SubsetSpec, size: tuple[int, int], res: tuple[int, int]
) -> ImageItem:
    """An image trained at the fixed resolution, as kohya accepts it without bucketing."""
    face = face_from_name(image) if subset.face_crop_aug_range else None
    if face is not None:
        if size[0] < res[0] or size[1] < res[1]:
            raise DatasetError(
                f"image is {size[0]}x{size[1]}, smaller than the resolution"
                f" {res[0]}x{res[1]}: face_crop_aug_range cannot cut it",
                path=image,
                hint="use a larger image or a lower resolution",
            )
        caption = read_caption(image, subset)
        return ImageItem(image, caption, subset, size, res, face=face)
    larger = size[0] > res[0] or size[1] > res[1]
    if larger and subset.random_crop and size[0] >= res[0] and size[1] >= res[1]:
        return ImageItem(image, read_caption(image, subset), subset, size, res, True)
    if larger and subset.random_crop:
        raise DatasetError(
            f"image is {size[0]}x{size[1]}: larger than the resolution"
            f" {res[0]}x{res[1]} on one side and smaller on the other, which"
            " random_crop cannot cut without bucketing",
            path=image,
            hint="set enable_bucket = true or resize the image",
        )
    if larger:
        raise DatasetError(
            f"image is {size[0]}x{size[1]}, larger than the resolution"
            f" {res[0]}x{res[1]}, and bucketing is off",
            path=image,
            hint="set enable_bucket = true or resize the image",
        )
    return ImageItem(image, read_caption(image, subset), subset, size, res)


def prepare(spec: DatasetSpec, *, training: bool = True) -> PreparedDataset:
    """The dataset's images on one side of the validation split, each with its bucket."""
    res = spec.resolution
    buckets = _bucket_list(spec)
    items: list[ImageItem] = []
    for subset in spec.subsets:
        for image in _subset_images(spec, subset, training):
            size = _image_size(image)
            if not spec.enable_bucket:
                items.append(_unbucketed_item(image, subset, size, res))
                continue
            bucket = select_bucket(
                size,
                buckets,
                max_reso=res,
                steps=spec.bucket_reso_steps,
                no_upscale=spec.bucket_no_upscale,
                min_size=spec.min_bucket_reso,
                max_size=spec.max_bucket_reso,
            )
            items.append(ImageItem(image, read_caption(image, subset), subset, size, bucket))
    return PreparedDataset(spec, tuple(items), training)


def build_reg_fill(items: list[ImageItem]) -> list[ImageItem]:
    """kohya loops reg images until they match the number of training samples."""
    train_samples = sum(it.subset.num_repeats for it in items if not it.is_reg)
    reg = [it for it in items if it.is_reg]
    out: list[ImageItem] = []
    if not reg:
        return out
    i = 0
    # cycled, not sampled: kohya repeats the reg list in order to match the training count
    # (train_util.py:2166-2182)
    while len(out) < train_samples:
        out.append(reg[i % len(reg)])
        i += 1
    return out


def epoch_batches(
    prepared: PreparedDataset | PreparedGroup, seed: int, epoch: int, *, shuffle: bool = True
) -> list[list[ImageItem]]:
    """This epoch's batches: samples grouped by bucket, each bucket chunked by batch size
    (each dataset with its own batch size), all datasets' batches shuffled together."""
    if isinstance(prepared, PreparedGroup):
        batches = [
            batch
            for i, part in enumerate(prepared.parts)
            for batch in epoch_batches(part, seed + i, epoch, shuffle=shuffle)
        ]
        if shuffle and len(prepared.parts) > 1:
            # kohya's DatasetGroup concatenates the datasets and the DataLoader shuffles the lot
            random.Random(seed * 7 + epoch).shuffle(batches)
        return batches
    # a seed per epoch, so a resumed run draws the same batches as an uninterrupted one
    rng = random.Random(seed * 1000003 + epoch)
    samples: list[ImageItem] = []
    for it in prepared.items:
        if not it.is_reg:
            # validation sets use num_repeats = 1 in kohya
            samples.extend([it] * (it.subset.num_repeats if prepared.training else 1))
    samples.extend(build_reg_fill(list(prepared.items)))
    by_bucket: dict[tuple[int, int], list[ImageItem]] = {}
    for it in samples:
        by_bucket.setdefault(it.bucket, []).append(it)
    batches = []
    bs = prepared.spec.batch_size
    # a batch never mixes buckets: kohya's BucketBatchIndex draws each batch from one bucket
    for bucket in sorted(by_bucket):
        group = by_bucket[bucket]
        if shuffle:
            rng.shuffle(group)
        batches.extend(group[i : i + bs] for i in range(0, len(group), bs))
    if shuffle:
        rng.shuffle(batches)
    return batches
