"""The dataset check's result values: one record per image, one report per subset, and
the DatasetReport that check_dataset() returns.

Separate from the check itself because they are plain values that the counting
(tally), the CLI and the HTML report read without needing the check's machinery.
check_dataset's callers import DatasetReport from kohyagen.dataset.check, its home as
the library API.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from kohyagen.dataset.buckets import BucketSettings
from kohyagen.findings import Finding, Severity

__all__ = ["DatasetReport", "ImageRecord", "SubsetReport"]


@dataclass(frozen=True)
class ImageRecord:
    path: str
    subset: str
    width: int
    height: int
    format: str | None
    mode: str | None
    size_bytes: int
    bucket: str | None  # "WxH", None when kohya cannot load the image
    caption: str | None  # the caption file kohya reads, None when there is none


@dataclass(frozen=True)
class SubsetReport:
    path: str
    name: str
    repeats: int
    class_tokens: str
    is_reg: bool
    image_count: int
    images_x_repeats: int
    captioned: int
    buckets: dict[str, int] = field(default_factory=dict)  # images per bucket (no repeats)


@dataclass(frozen=True)
class DatasetReport:
    root: str
    kind: str  # "train_dir" | "image_folder"
    model: str
    subsets: tuple[SubsetReport, ...]  # training subsets, then regularisation subsets
    findings: tuple[Finding, ...]
    image_count: int  # training images kohya lists (not counting regularisation)
    images_x_repeats: int
    steps_per_epoch: int  # at batch_size, bucketed, regularisation samples included
    batch_size: int
    caption_extension: str
    buckets: dict[str, int]  # samples per bucket per epoch (repeats and reg included)
    tag_frequencies: dict[str, int]
    size_advice: str
    bucket_settings: BucketSettings
    reg_image_count: int = 0
    images: tuple[ImageRecord, ...] = ()
    deep: bool = False
    notes: tuple[str, ...] = ()  # what this check did not cover, in words

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    def to_dict(self) -> dict:
        # Field by field, not asdict(self): asdict deep-copies every value recursively,
        # the findings included only to be replaced, which was a twentieth of a default
        # `dataset check --json` on 3,000 images. The records hold plain values only.
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["subsets"] = [asdict(s) for s in self.subsets]
        data["images"] = [dict(vars(r)) for r in self.images]
        data["buckets"], data["tag_frequencies"] = dict(self.buckets), dict(self.tag_frequencies)
        data["notes"] = list(self.notes)
        data["bucket_settings"] = asdict(self.bucket_settings)
        data["findings"] = [f.to_dict() for f in self.findings]
        data["bucket_settings"]["resolution"] = list(self.bucket_settings.resolution)
        data["counts"] = {s.value: sum(f.severity is s for f in self.findings) for s in Severity}
        return data
