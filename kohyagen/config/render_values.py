"""Which value each kohya option gets for a dataset x model x GPU, and why.

Pure decisions, no text: kohyagen.config.render turns them into the commented TOML files.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kohyagen.config.presets import ModelPreset, Setting
from kohyagen.config.sample_prompts import caption_tag_counts
from kohyagen.dataset.buckets import bucket_range
from kohyagen.dataset.captions import first_line
from kohyagen.dataset.layout import Subset, TrainDirLayout

SEED = 42
# kohya without validation_seed can put one image in both halves (train_util.py:142-178)
VALIDATION_SEED = 42
# Below this many images a validation split costs too much training data.
VALIDATION_MIN_IMAGES = 20
VALIDATION_SPLIT = 0.1
# a cap so that one tiny folder with repeats 1 does not ask for thousands of epochs
MAX_EPOCHS = 100
# enough saved epochs for pick to see the loss turn, few enough to keep disk use low
TARGET_CHECKPOINTS = 10
WARMUP_FRACTION = 0.05


@dataclass
class Choices:
    """Option values with the reason for each, in the order they were decided."""

    values: dict[str, Any] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)

    def put(self, key: str, value: Any, reason: str) -> None:
        self.values[key] = value
        self.why[key] = reason

    def take(self, key: str, setting: Setting) -> None:
        self.put(key, setting.value, setting.reason)


@dataclass(frozen=True)
class Captions:
    extension: str
    reason: str
    tag_counts: Counter[str]


@dataclass(frozen=True)
class StepPlan:
    split: float
    train_images: int
    per_epoch: int  # images x repeats after the validation split
    batch: int
    epochs: int
    epochs_given: bool
    total_steps: int
    save_every: int
    warmup: int

    @property
    def image_views(self) -> int:
        return self.epochs * self.per_epoch


def choose_captions(layout: TrainDirLayout, trigger: str | None, notes: list[str]) -> Captions:
    """The caption extension on disk (kohya's default .caption would miss .txt files)."""
    ext = layout.detect_caption_extension()
    counts = layout.caption_extension_counts()
    if ext:
        reason = (
            f"{counts[ext]} of {layout.image_count} images have {ext} captions "
            "(kohya's default .caption would ignore them)"
        )
        if counts[ext] < layout.image_count:
            notes.append(
                f"{layout.image_count - counts[ext]} images have no {ext} caption; "
                "kohya uses their folder's class tokens instead"
            )
    else:
        ext = ".txt"
        reason = (
            "no caption files yet, so kohya uses each folder's class tokens; .txt is what "
            "`kohyagen tag` writes"
        )
        notes.append("no caption files: every image is captioned by its folder's class tokens")
    tags = caption_tag_counts(layout.subsets, ext)
    if trigger and tags:
        firsts = [first_line(p) or "" for s in layout.subsets for p in s.caption_files(ext)]
        lacking = sum(1 for line in firsts if trigger not in line)
        if lacking:
            notes.append(
                f"{lacking} of {len(firsts)} captions lack the trigger {trigger!r}; add it "
                f"(e.g. `kohyagen tag --trigger {trigger}`)"
            )
    return Captions(ext, reason, tags)


def _train_images(subsets: tuple[Subset, ...], split: float) -> tuple[int, int]:
    """(training images, images x repeats) after kohya's per-subset validation split."""
    images = repeated = 0
    for subset in subsets:
        n = len(subset.images)
        # kohya's split keeps ceil(n * (1 - split)) per subset for training (train_util.py:142-178)
        kept = math.ceil(n * (1 - split)) if split else n
        images += kept
        # validation images use num_repeats = 1 in kohya, so only the kept ones repeat
        repeated += kept * subset.repeats
    return images, repeated


def plan_steps(
    model: ModelPreset,
    layout: TrainDirLayout,
    settings: dict[str, Setting],
    epochs: int | None,
    notes: list[str],
) -> StepPlan:
    """Validation split, batch cap, epochs and save interval for a sensible step count.

    Epochs aim at the preset's number of image views (steps x batch), so a bigger
    batch means fewer steps for the same training.
    """
    split = VALIDATION_SPLIT if layout.image_count >= VALIDATION_MIN_IMAGES else 0.0
    if not split:
        notes.append(
            f"{layout.image_count} images: no validation split (needs {VALIDATION_MIN_IMAGES}+)"
        )
    train_images, per_epoch = _train_images(layout.subsets, split)
    batch = settings["train_batch_size"].value
    # a batch larger than an epoch would only repeat images within one step
    if batch > per_epoch:
        batch = max(1, per_epoch)
        settings["train_batch_size"] = Setting(
            batch, f"capped at the {per_epoch} images x repeats of one epoch"
        )
    # the guide's rule of thumb: a LoRA wants a number of image views, not of epochs
    chosen = epochs or max(1, min(MAX_EPOCHS, round(model.target_samples / max(1, per_epoch))))
    views = chosen * per_epoch
    if epochs is None and views < model.min_samples:
        notes.append(
            f"only {views} image views in {chosen} epochs (aim "
            f"{model.min_samples}-{model.max_samples}); raise the N_ repeats of the folders"
        )
    if epochs is None and views > model.max_samples:
        notes.append(
            f"{per_epoch} images x repeats per epoch: one epoch already exceeds "
            f"{model.max_samples} image views; lower the N_ repeats of the folders"
        )
    # a short last batch is still a step (per bucket in kohya; dataset check counts those)
    total = chosen * math.ceil(per_epoch / batch)
    return StepPlan(
        split=split,
        train_images=train_images,
        per_epoch=per_epoch,
        batch=batch,
        epochs=chosen,
        epochs_given=epochs is not None,
        total_steps=total,
        save_every=max(1, math.ceil(chosen / TARGET_CHECKPOINTS)),
        warmup=round(total * WARMUP_FRACTION),
    )


def dataset_choices(
    model: ModelPreset,
    layout: TrainDirLayout,
    captions: Captions,
    plan: StepPlan,
    *,
    cached_text_encoder: bool,
    notes: list[str],
) -> tuple[Choices, list[dict[str, Any]]]:
    """[general] values and one entry per subset (repeats and class tokens stated)."""
    c = Choices()
    low, high = bucket_range(model.resolution)
    # the dataset file is voluptuous-checked: an int or [w, h], never the training file's string
    c.put("resolution", model.resolution, f"{model.name} native size (an integer in this file)")
    c.put("enable_bucket", True, "train each image near its own aspect ratio instead of cropping")
    c.put("min_bucket_reso", low, "smallest bucket side (kohya asserts it is <= resolution)")
    c.put("max_bucket_reso", high, "largest bucket side (kohya asserts it is >= resolution)")
    c.put(
        "bucket_reso_steps",
        64,
        f"bucket sides in steps of 64 (kohya asserts a multiple of {model.bucket_step} "
        f"for {model.name})"
        if model.is_dit
        else "bucket sides in steps of 64 (what kohya requires)",
    )
    c.put("bucket_no_upscale", True, "never upscale small images (they get a smaller bucket)")
    c.put("caption_extension", captions.extension, captions.reason)
    # shuffled captions change every step, which cached text encoder outputs cannot follow
    if not cached_text_encoder:
        c.put("shuffle_caption", True, "shuffle tags each step so no tag order is memorised")
        c.put("keep_tokens", 1, "keep the first tag (the trigger) in front when shuffling")
    if plan.split:
        c.put(
            "validation_split",
            plan.split,
            f"{layout.image_count} images: hold out 10% to measure validation loss",
        )
        c.put("validation_seed", VALIDATION_SEED, "fixed seed: the same images are held out")
    subsets = []
    for subset in layout.subsets:
        if not subset.images:
            notes.append(f"{subset.name}: no images, left out")
            continue
        captioned = len(subset.caption_files(captions.extension))
        subsets.append(
            {
                "image_dir": str(subset.path),
                # stated, not left to the folder name: with a dataset config kohya does not parse N_name
                "num_repeats": subset.repeats,
                "class_tokens": subset.class_tokens,
                "note": f"{subset.name}: {len(subset.images)} images ({captioned} captioned), "
                f"{subset.repeats} repeats",
            }
        )
    return c, subsets
