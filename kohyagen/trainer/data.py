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

from kohyagen.buckets import BucketSettings, bucket_resolutions
from kohyagen.buckets import select_bucket as shared_select_bucket
from kohyagen.errors import DatasetError
from kohyagen.layout import list_images
from kohyagen.trainer.config import DatasetSpec, SubsetSpec


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
    """kohya's fixed bucket list (used when upscaling is allowed), from kohyagen.buckets."""
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
    settings = BucketSettings(tuple(max_reso), min_size, max_size, steps, no_upscale)
    bw, bh = shared_select_bucket(size[0], size[1], settings)
    # kohya makes a 0-wide bucket of an image narrower than one step, and fails later.
    return max(steps, bw), max(steps, bh)


def resize_and_crop(image, bucket: tuple[int, int], *, rng: random.Random | None = None):
    """Scale so the image covers the bucket, then crop the centre, or with rng a random
    window (random_crop). Returns (image, crop_ltrb)."""
    from PIL import Image

    bw, bh = bucket
    w, h = image.size
    scale = max(bw / w, bh / h)
    new_w, new_h = max(bw, round(w * scale)), max(bh, round(h * scale))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    if rng is None:
        left, top = (new_w - bw) // 2, (new_h - bh) // 2
    else:
        left, top = rng.randint(0, new_w - bw), rng.randint(0, new_h - bh)
    return image.crop((left, top, left + bw, top + bh)), (left, top, left + bw, top + bh)


def native_crop(image, size: tuple[int, int], rng: random.Random):
    """A random size-d window of the image at full scale (no bucketing with random_crop)."""
    w, h = image.size
    left, top = rng.randint(0, max(0, w - size[0])), rng.randint(0, max(0, h - size[1]))
    return image.crop((left, top, left + size[0], top + size[1]))


def face_from_name(path: Path) -> tuple[int, int, int, int] | None:
    """kohya's face box in the file name: `<name>_<cx>_<cy>_<w>_<h>.<ext>` (5+ parts)."""
    tokens = path.stem.split("_")
    if len(tokens) < 5:
        return None
    try:
        cx, cy, w, h = (int(t) for t in tokens[-4:])
    except ValueError as exc:
        raise DatasetError(
            "face_crop_aug_range reads the face box from file names ending in"
            " _<cx>_<cy>_<w>_<h>; this one's last four parts are not numbers",
            path=path,
            hint="rename the image, or remove face_crop_aug_range",
        ) from exc
    return (cx, cy, w, h) if cx > 0 else None


def face_crop(
    image,
    size: tuple[int, int],
    face: tuple[int, int, int, int],
    face_range: tuple[float, float],
    *,
    random_crop: bool,
    rng: random.Random,
):
    """kohya's face crop: scale so the face fills 1/high .. 1/low of the shorter side (never
    upscaling, always covering the target), then cut a target-sized window around the face,
    jittered a little, or widely with random_crop."""
    from PIL import Image

    width, height = image.size
    tw, th = size
    if (width, height) == (tw, th):
        return image
    cx, cy, fw, fh = face
    face_size = max(fw, fh)
    short = min(tw, th)
    cover = max(th / height, tw / width)
    min_scale = min(1.0, max(cover, short / (face_size * face_range[1])))
    max_scale = min(1.0, max(min_scale, short / (face_size * face_range[0])))
    scale = min_scale if min_scale >= max_scale else rng.uniform(min_scale, max_scale)
    nw, nh = int(width * scale + 0.5), int(height * scale + 0.5)
    if (nw, nh) != (width, height):
        image = image.resize((nw, nh), Image.Resampling.LANCZOS)
    centre = (int(cx * scale + 0.5), int(cy * scale + 0.5))
    starts = []
    for target, length, face_p in ((tw, nw, centre[0]), (th, nh, centre[1])):
        start = face_p - target // 2
        if random_crop:
            spread = max(length - face_p, face_p)
            start += rng.randint(0, spread) + rng.randint(0, spread) - spread
        elif face_range[0] != face_range[1] and face_size > short // 10 and face_size >= 40:
            start += rng.randint(-face_size // 20, face_size // 20)
        starts.append(max(0, min(start, length - target)))
    left, top = starts
    return image.crop((left, top, left + tw, top + th))


def color_aug(image, rng: random.Random):
    """kohya's color_aug: a third of the time, a hue shift of up to 8 of OpenCV's 180 hue
    steps, or else a gamma in 0.95..1.05 applied to the raw 0..255 values (kohya's quirk:
    not normalised first, so it also darkens or brightens). kohya converts RGB data as if
    it were BGR, which mirrors the hue circle; a symmetric shift makes that the same."""
    import numpy as np
    from PIL import Image

    if rng.random() > 0.33:
        return image
    if rng.random() > 0.5:
        shift = rng.uniform(-8, 8) * 256 / 180  # PIL's hue runs over 0..255
        hsv = np.asarray(image.convert("HSV")).copy()
        hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.float64) + shift) % 256).astype(np.uint8)
        return Image.fromarray(hsv, "HSV").convert("RGB")
    gamma = rng.uniform(0.95, 1.05)
    arr = np.asarray(image, dtype=np.float64) ** gamma
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def read_caption(image: Path, subset: SubsetSpec) -> str:
    caption_file = image.with_suffix(subset.caption_extension)
    if caption_file.is_file():
        try:
            lines = caption_file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DatasetError(
                "caption file is not UTF-8 text",
                path=caption_file,
                hint="save it as UTF-8 (kohyagen dataset prepare converts captions)",
            ) from exc
        text = lines[0].strip() if lines else ""
        if not text:
            raise DatasetError(
                "caption file is empty",
                path=caption_file,
                hint="write a caption on its first line or delete the file",
            )
        return text
    return subset.class_tokens or ""


def split_validation(
    images: list[Path], split: float, seed: int | None, *, training: bool
) -> list[Path]:
    """kohya's per-subset split: train = first ceil(n(1-s)), validation = last round(n s)."""
    if split <= 0:
        return images if training else []
    shuffled = list(images)
    (random.Random(seed) if seed is not None else random).shuffle(shuffled)
    n = len(shuffled)
    if training:
        return shuffled[: math.ceil(n * (1 - split))]
    take = round(n * split)
    return shuffled[n - take :] if take else []


@dataclass(frozen=True)
class PreparedDataset:
    spec: DatasetSpec
    items: tuple[ImageItem, ...]
    training: bool

    @property
    def train_count(self) -> int:
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


def prepare(spec: DatasetSpec, *, training: bool = True) -> PreparedDataset:
    from PIL import Image

    res = spec.resolution
    buckets: list[tuple[int, int]] = []
    if spec.enable_bucket:
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
        buckets = make_buckets(
            res, spec.min_bucket_reso, spec.max_bucket_reso, spec.bucket_reso_steps
        )
    items: list[ImageItem] = []
    for subset in spec.subsets:
        if not subset.image_dir.is_dir():
            raise DatasetError("image folder not found", path=subset.image_dir)
        images = list_images(subset.image_dir)
        if not subset.is_reg:
            images = split_validation(
                images, spec.validation_split, spec.validation_seed, training=training
            )
        elif not training:
            images = []  # kohya never validates on reg images
        for image in images:
            try:
                with Image.open(image) as im:
                    size = im.size
                    # Rotated by its EXIF orientation when loaded, so bucket it rotated too.
                    if im.getexif().get(0x0112) in (5, 6, 7, 8):
                        size = (size[1], size[0])
            except OSError as exc:
                raise DatasetError(
                    "cannot read image", path=image, hint="remove or re-save it"
                ) from exc
            if spec.enable_bucket:
                bucket = select_bucket(
                    size,
                    buckets,
                    max_reso=res,
                    steps=spec.bucket_reso_steps,
                    no_upscale=spec.bucket_no_upscale,
                    min_size=spec.min_bucket_reso,
                    max_size=spec.max_bucket_reso,
                )
            else:
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
                    items.append(ImageItem(image, caption, subset, size, res, face=face))
                    continue
                larger = size[0] > res[0] or size[1] > res[1]
                if larger and subset.random_crop and size[0] >= res[0] and size[1] >= res[1]:
                    items.append(
                        ImageItem(image, read_caption(image, subset), subset, size, res, True)
                    )
                    continue
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
                bucket = res
            items.append(ImageItem(image, read_caption(image, subset), subset, size, bucket))
    return PreparedDataset(spec, tuple(items), training)


def process_caption(caption: str, subset: SubsetSpec, epoch: int, rng: random.Random) -> str:
    """Caption dropout, tag dropout, shuffling with kept tokens, prefix and suffix."""
    if subset.caption_dropout_rate > 0 and rng.random() < subset.caption_dropout_rate:
        return ""
    every = subset.caption_dropout_every_n_epochs
    if every > 0 and epoch % every == 0:
        return ""
    if subset.caption_prefix:
        caption = subset.caption_prefix + " " + caption
    if subset.caption_suffix:
        caption = caption + " " + subset.caption_suffix
    if subset.shuffle_caption or subset.caption_tag_dropout_rate > 0:
        sep = subset.caption_separator.strip() or subset.caption_separator
        marker = subset.keep_tokens_separator
        if marker and marker in caption:
            # "kept, tags ||| shuffled, tags": the part before the marker never moves.
            head, _, tail = caption.partition(marker)
            fixed = [t.strip() for t in head.split(sep) if t.strip()]
            rest = [t.strip() for t in tail.split(sep)]
        else:
            tokens = [t.strip() for t in caption.split(sep)]
            fixed, rest = tokens[: subset.keep_tokens], tokens[subset.keep_tokens :]
        if subset.caption_tag_dropout_rate > 0:
            rest = [t for t in rest if rng.random() >= subset.caption_tag_dropout_rate]
        if subset.shuffle_caption:
            rng.shuffle(rest)
        caption = ", ".join(t for t in fixed + rest if t)
    return caption


def build_reg_fill(items: list[ImageItem]) -> list[ImageItem]:
    """kohya loops reg images until they match the number of training samples."""
    train_samples = sum(it.subset.num_repeats for it in items if not it.is_reg)
    reg = [it for it in items if it.is_reg]
    out: list[ImageItem] = []
    if not reg:
        return out
    i = 0
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
            random.Random(seed * 7 + epoch).shuffle(batches)
        return batches
    rng = random.Random(seed * 1000003 + epoch)
    samples: list[ImageItem] = []
    for it in prepared.items:
        if not it.is_reg:
            samples.extend([it] * (it.subset.num_repeats if prepared.training else 1))
    samples.extend(build_reg_fill(list(prepared.items)))
    by_bucket: dict[tuple[int, int], list[ImageItem]] = {}
    for it in samples:
        by_bucket.setdefault(it.bucket, []).append(it)
    batches: list[list[ImageItem]] = []
    bs = prepared.spec.batch_size
    for bucket in sorted(by_bucket):
        group = by_bucket[bucket]
        if shuffle:
            rng.shuffle(group)
        batches.extend(group[i : i + bs] for i in range(0, len(group), bs))
    if shuffle:
        rng.shuffle(batches)
    return batches
