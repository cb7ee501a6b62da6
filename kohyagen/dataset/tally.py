"""The numbers kohya will count for a checked dataset: each image's bucket, each
subset's report and the samples per bucket in one epoch.

Separate from the check because it is pure arithmetic over the probes, captions and
bucket settings the check has already gathered: no files are read here.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from kohyagen.dataset.buckets import BucketSettings, bucket_key, select_bucket
from kohyagen.dataset.captions import CaptionRead
from kohyagen.dataset.check_report import ImageRecord, SubsetReport
from kohyagen.dataset.images import ImageProbe
from kohyagen.dataset.scan import SubsetListing

__all__ = ["bucket_order", "tally_subsets"]


def bucket_order(key: str) -> tuple[int, int]:
    w, _, h = key.partition("x")
    return int(w), int(h)


def tally_subsets(
    subsets: list[SubsetListing],
    probes: dict[str, ImageProbe],
    captions: dict[Path, dict[Path, CaptionRead]],
    settings: BucketSettings,
) -> tuple[list[ImageRecord], list[SubsetReport], Counter[str]]:
    """Each image's record, each subset's report, and the samples per bucket in one epoch."""
    records: list[ImageRecord] = []
    reports: list[SubsetReport] = []
    buckets_of: dict[str, str] = {}
    for subset in subsets:
        per_bucket: Counter[str] = Counter()
        for img in subset.listing.images:
            probe = probes[str(img)]
            bucket = None
            # an image kohya cannot load gets no bucket: the check reports it as an error
            if probe.error is None and probe.width > 0 and probe.height > 0:
                bucket = bucket_key(select_bucket(probe.width, probe.height, settings))
                per_bucket[bucket] += 1
                buckets_of[str(img)] = bucket
            read = captions[subset.path].get(img)
            records.append(
                ImageRecord(
                    str(img),
                    subset.path.name,
                    probe.width,
                    probe.height,
                    probe.format,
                    probe.mode,
                    probe.size_bytes,
                    bucket,
                    str(read.path) if read else None,
                )
            )
        n = len(subset.listing.images)
        reports.append(
            SubsetReport(
                str(subset.path),
                subset.path.name,
                subset.repeats,
                subset.class_tokens,
                subset.is_reg,
                n,
                n * subset.repeats,
                # captions kohya can read: an unreadable or non-UTF-8 one is an error, not a caption
                sum(1 for read in captions[subset.path].values() if read.text is not None),
                dict(sorted(per_bucket.items(), key=lambda kv: bucket_order(kv[0]))),
            )
        )
    return records, reports, _epoch_samples(subsets, buckets_of)


def _epoch_samples(subsets: list[SubsetListing], buckets_of: dict[str, str]) -> Counter[str]:
    """Samples per bucket in one epoch, the way kohya fills them.

    Each training image counts `repeats` times. Regularisation images are cycled (first
    pass at their folder's repeats, then one more each) until they match the number of
    training samples.
    """
    samples: Counter[str] = Counter()
    train_total = 0
    for subset in subsets:
        if subset.is_reg:
            continue
        for img in subset.listing.images:
            if (b := buckets_of.get(str(img))) is not None:
                samples[b] += subset.repeats
                train_total += subset.repeats
    reg = [
        (buckets_of[str(img)], s.repeats)
        for s in subsets
        if s.is_reg
        for img in s.listing.images
        if str(img) in buckets_of
    ]
    n, first = 0, True
    while reg and n < train_total:
        for bucket, repeats in reg:
            step = repeats if first else 1
            samples[bucket] += step
            n += step
            if n >= train_total:
                break
        first = False
    return samples
