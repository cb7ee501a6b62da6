"""Dataset check: everything kohya would trip over, found before any GPU time is spent.

check_dataset() lists the folders as kohya does (scan), probes every image (images,
probe_pool), reads every caption (captions, caption_rules), applies the rules (rules,
layout_rules, image_rules) and computes the numbers kohya will use: images × repeats,
the bucket of each image (buckets, tally) and the steps per epoch. The bucket options
and their findings live in bucket_findings, the report's values in check_report;
DatasetReport stays importable from here, check_dataset's home. prepare_dataset()
(prepare) builds a clean kohya layout from a folder of images.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kohyagen.config.presets import ModelPreset, get_model
from kohyagen.dataset.bucket_findings import (
    crash_findings_and_settings,
    default_bucket_settings,
    settings_findings,
)
from kohyagen.dataset.buckets import BucketSettings, bucket_for, steps_per_epoch
from kohyagen.dataset.caption_rules import check_captions, choose_caption_extension
from kohyagen.dataset.captions import CaptionRead, tag_frequencies
from kohyagen.dataset.check_report import DatasetReport, ImageRecord, SubsetReport
from kohyagen.dataset.digests import with_colliding_digests
from kohyagen.dataset.image_rules import image_findings
from kohyagen.dataset.images import ImageProbe
from kohyagen.dataset.layout_rules import layout_findings
from kohyagen.dataset.probe_pool import ProgressFn, probe_many
from kohyagen.dataset.rules import (
    count_findings,
    duplicate_findings,
    same_stem_findings,
    size_advice,
)
from kohyagen.dataset.scan import DirListing, SubsetListing, scan
from kohyagen.dataset.tally import bucket_order, tally_subsets
from kohyagen.errors import UsageError
from kohyagen.findings import Finding, Severity, sort_findings
from kohyagen.validate import caption_extension_problem, require

if TYPE_CHECKING:
    from kohyagen.dataset.prepare import PrepareResult, auto_repeats, prepare_dataset

_FROM_PREPARE = frozenset({"PrepareResult", "auto_repeats", "prepare_dataset"})


def __getattr__(name: str) -> Any:
    """prepare's names, imported on first use: a check never needs them, and importing
    prepare (shutil, tempfile, the staging machinery) was a tenth of `dataset check`'s
    start-up."""
    if name in _FROM_PREPARE:
        from kohyagen.dataset import prepare

        return getattr(prepare, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DatasetReport",
    "ImageRecord",
    "PrepareResult",
    "SubsetReport",
    "auto_repeats",
    "bucket_for",
    "check_dataset",
    "prepare_dataset",
]


def _normalise_ext(ext: str | None) -> str | None:
    if ext is None:
        return None
    ext = ext.strip()
    if not ext or ext == ".":
        raise UsageError("the caption extension is empty", hint="e.g. --caption-ext .txt")
    ext = ext if ext.startswith(".") else "." + ext
    require(caption_extension_problem(ext), hint="e.g. --caption-ext .txt")
    return ext


def _layout_findings(listing: DirListing, reg_listing: DirListing | None) -> list[Finding]:
    """The folder layout's findings, the regularisation folder's included."""
    findings: list[Finding] = layout_findings(listing)
    if reg_listing is not None:
        findings += layout_findings(reg_listing)
        if not any(s.listing.images for s in reg_listing.subsets):
            findings += [
                Finding(
                    Severity.ERROR,
                    "reg-no-images",
                    "the regularisation folder has no N_name/ folder with images",
                    str(reg_listing.root),
                    "put the images in REG/1_CLASS/",
                )
            ]
    return findings


def _probe(
    subsets: list[SubsetListing],
    root: Path,
    preset: ModelPreset,
    *,
    deep: bool,
    near: bool,
    workers: int | None,
    progress: ProgressFn | None,
) -> tuple[dict[str, ImageProbe], list[Finding]]:
    """Every image probed (by path), and the findings of images, duplicates and stems."""
    paths = [str(p) for s in subsets for p in s.listing.images]
    probes = dict(
        zip(
            paths,
            # hashes only where sizes collide (kohyagen.dataset.digests): most files cannot
            # be exact duplicates, and hashing them was a fifth of a default check
            with_colliding_digests(
                probe_many(
                    paths, deep=deep, perceptual=near, workers=workers, progress=progress,
                    digest=False,
                )
            ),
            strict=True,
        )
    )
    findings: list[Finding] = []
    for probe in probes.values():
        findings += image_findings(probe, min_side=preset.min_side, model=preset.name)
    findings += duplicate_findings(list(probes.values()), near=near, root=root)
    for subset in subsets:
        findings += same_stem_findings(subset)
    return probes, findings


def _caption_findings(
    listing: DirListing,
    subsets: list[SubsetListing],
    given_ext: str | None,
    trigger: str | None,
    probes: dict[str, ImageProbe],
) -> tuple[str, list[Finding], dict[Path, dict[Path, CaptionRead]], list[str]]:
    """The caption extension, caption findings, each subset's captions, and the training
    captions as kohya reads them."""
    train_subsets = [s for s in subsets if not s.is_reg]
    ext, ext_finding = choose_caption_extension(listing, train_subsets, given_ext)
    findings: list[Finding] = [ext_finding] if ext_finding else []
    broken = {Path(p) for p, probe in probes.items() if probe.error}
    captions_by_subset = {}
    effective_captions: list[str] = []
    for subset in subsets:
        sub_findings, captions, effective = check_captions(
            subset, ext, None if subset.is_reg else trigger, broken
        )
        findings += sub_findings
        captions_by_subset[subset.path] = captions
        if not subset.is_reg:
            effective_captions += effective
    return ext, findings, captions_by_subset, effective_captions


def _notes(deep: bool, near_duplicates: bool) -> tuple[str, ...]:
    """What this check did not look at, and the option that would."""
    notes = []
    if not near_duplicates:
        notes.append("near-duplicates are looked for with --deep (they need the pixels)")
    if not deep:
        notes.append("pixels were not decoded: damage inside the image data shows with --deep")
    return tuple(notes)


def _scan_reg(reg: str | Path | None, train_root: Path) -> DirListing | None:
    if reg is None:
        return None
    if Path(reg).resolve() == train_root.resolve():
        # kohya would train every image twice over, once as a regularisation image
        raise UsageError(
            "the regularisation folder is the training folder itself",
            hint="pass the folder that holds REG/1_CLASS/ as --reg, or leave --reg out",
        )
    return scan(reg, is_reg=True)


def check_dataset(
    path: str | Path,
    *,
    model: str = "sd15",
    trigger: str | None = None,
    caption_ext: str | None = None,
    batch_size: int = 1,
    reg: str | Path | None = None,
    deep: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    near_duplicates: bool | None = None,
    resolution: int | None = None,
    min_bucket_reso: int | None = None,
    max_bucket_reso: int | None = None,
    bucket_reso_steps: int = 64,
    bucket_no_upscale: bool | None = None,
) -> DatasetReport:
    """Check a kohya train dir (parent of N_name/) or a folder of images.

    The default reads headers only; deep=True decodes every pixel in a process pool.
    Near-duplicates need pixels, so they are looked for when deep (or near_duplicates=True,
    which decodes JPEGs at 1/8 scale and other formats fully).
    Bucket options default to what `kohyagen config` renders for the model (bucket range
    resolution/2 to 2×resolution, no upscaling), so the numbers match the training run.
    Raises DatasetError when path (or reg) is missing or not a folder, PresetError for an
    unknown model.
    """
    preset = get_model(model)
    if batch_size < 1:
        raise UsageError("batch size must be 1 or more", hint="e.g. --batch-size 2")
    trigger = trigger.strip() if trigger else None
    given_ext = _normalise_ext(caption_ext)
    settings = default_bucket_settings(
        resolution or preset.resolution, min_bucket_reso, max_bucket_reso, bucket_reso_steps,
        bucket_no_upscale,
    )  # fmt: skip
    if near_duplicates is None:
        near_duplicates = deep

    listing = scan(path)
    reg_listing = _scan_reg(reg, listing.root)
    subsets = list(listing.subsets) + (list(reg_listing.subsets) if reg_listing else [])
    findings = _layout_findings(listing, reg_listing)
    probes, probe_found = _probe(
        subsets, listing.root, preset, deep=deep, near=near_duplicates, workers=workers,
        progress=progress,
    )  # fmt: skip
    findings += probe_found
    ext, caption_found, captions_by_subset, effective_captions = _caption_findings(
        listing, subsets, given_ext, trigger, probes
    )
    findings += caption_found
    crash, settings = crash_findings_and_settings(probes, settings, bucket_no_upscale)
    findings += crash
    numbers = tally_subsets(subsets, probes, captions_by_subset, settings)
    return _report(
        listing, preset, subsets, findings, numbers, ext=ext, captions=effective_captions,
        settings=settings, batch_size=batch_size, deep=deep, near=near_duplicates,
    )  # fmt: skip


def _report(
    listing: DirListing,
    preset: ModelPreset,
    subsets: list[SubsetListing],
    findings: list[Finding],
    numbers: tuple[list[ImageRecord], list[SubsetReport], Counter[str]],
    *,
    ext: str,
    captions: list[str],
    settings: BucketSettings,
    batch_size: int,
    deep: bool,
    near: bool,
) -> DatasetReport:
    """The report: the numbers kohya will count, and every finding once, most severe first."""
    records, subset_reports, samples = numbers
    train_subsets = [s for s in subsets if not s.is_reg]
    image_count = sum(len(s.listing.images) for s in train_subsets)
    findings = findings + count_findings(listing.root, image_count, listing.kind)
    findings += settings_findings(settings)
    return DatasetReport(
        root=str(listing.root), kind=listing.kind, model=preset.name,
        subsets=tuple(subset_reports), findings=tuple(sort_findings(_dedupe(findings))),
        image_count=image_count,
        images_x_repeats=sum(len(s.listing.images) * s.repeats for s in train_subsets),
        steps_per_epoch=steps_per_epoch(samples.values(), batch_size), batch_size=batch_size,
        caption_extension=ext,
        buckets=dict(sorted(samples.items(), key=lambda kv: bucket_order(kv[0]))),
        tag_frequencies=tag_frequencies(captions),
        size_advice=size_advice(image_count), bucket_settings=settings,
        reg_image_count=sum(len(s.listing.images) for s in subsets if s.is_reg),
        images=tuple(records), deep=deep, notes=_notes(deep, near),
    )  # fmt: skip


def _dedupe(findings: list[Finding]) -> list[Finding]:
    return list(dict.fromkeys(findings))
