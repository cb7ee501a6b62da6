"""What report.html says about the dataset and the settings, read from the run's own files.

The dataset part reads dataset_config.toml the way kohya does (general < dataset < subset
values; only the image_dir itself, not its subfolders) and puts each image into the bucket
kohya would (kohyagen.dataset.buckets), reading image headers only. The settings part
lists the training options whose value is not kohya's argparse default.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kohyagen import safe_io
from kohyagen.config.schema import SCRIPTS, script_for_config, training_defaults
from kohyagen.dataset.buckets import BucketSettings, select_bucket
from kohyagen.toml_compat import tomllib

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_IMAGES = 20_000  # header reads stay under a few seconds


@dataclass
class DatasetFacts:
    images: int = 0
    images_x_repeats: int = 0
    subsets: list[tuple[str, int, int]] = field(default_factory=list)  # dir, images, repeats
    buckets: Counter[str] = field(default_factory=Counter)
    tags: Counter[str] = field(default_factory=Counter)


def _resolution(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def _bucket_settings(values: dict[str, Any]) -> BucketSettings | None:
    resolution = _resolution(values.get("resolution"))
    if resolution is None or not values.get("enable_bucket"):
        return None
    return BucketSettings(
        resolution,
        int(values.get("min_bucket_reso", 256)),
        int(values.get("max_bucket_reso", 1024)),
        int(values.get("bucket_reso_steps", 64)),
        bool(values.get("bucket_no_upscale", False)),
    )


def _first_line(path: Path) -> str:
    try:
        # safe_io: a caption that is a FIFO or a link to /dev/zero must not hang the report
        text = safe_io.read_bytes(path).decode("utf-8", errors="replace")
    except OSError:
        return ""
    return next((ln for ln in text.splitlines() if ln.strip()), "")


def dataset_facts(config: Path) -> DatasetFacts | None:
    """Images, repeats, buckets and caption tags of a dataset_config.toml (None if absent)."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = tomllib.loads(safe_io.read_text(config, safe_io.TOML_LIMIT))
    except (OSError, ValueError, RecursionError):  # RecursionError: nested too deeply
        return None
    facts = DatasetFacts()
    general = data.get("general") or {}
    for dataset in data.get("datasets") or []:
        level = {**general, **{k: v for k, v in dataset.items() if k != "subsets"}}
        for subset in dataset.get("subsets") or []:
            values = {**level, **subset}
            folder = Path(str(values.get("image_dir", "")))
            if not folder.is_dir():
                continue
            images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            repeats = int(values.get("num_repeats", 1))
            facts.subsets.append((folder.name, len(images), repeats))
            facts.images += len(images)
            facts.images_x_repeats += len(images) * repeats
            settings = _bucket_settings(values)
            extension = str(values.get("caption_extension", ".caption"))
            for image in images[:MAX_IMAGES]:
                line = _first_line(image.with_suffix(extension))
                facts.tags.update({t.strip() for t in line.split(",") if t.strip()})
                try:
                    with safe_io.open_regular(image) as fh, Image.open(fh) as im:
                        size = im.size
                except (OSError, UnidentifiedImageError):
                    continue
                bucket = select_bucket(size[0], size[1], settings) if settings else _resolution(
                    values.get("resolution")) or size  # fmt: skip
                facts.buckets[f"{bucket[0]}x{bucket[1]}"] += 1
    return facts


def changed_settings(run_dir: Path, training: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, value, kohya's default) for each option set to something else than the default;
    an option without a default in kohya's table counts as changed when it is set."""
    config = run_dir / "training_config.toml"
    text = config.read_text(encoding="utf-8") if config.is_file() else ""
    script = script_for_config(text, training)
    if script not in SCRIPTS:
        return [(k, v, None) for k, v in sorted(training.items())]
    defaults = training_defaults(script)
    rows = []
    for key, value in sorted(training.items()):
        default = defaults.get(key)
        same = default == value or (isinstance(value, list) and len(value) == 1
                                    and value[0] == default)  # fmt: skip
        if not same:
            rows.append((key, value, default))
    return rows
