"""The stages of `kohyagen run`, each a function of the run context.

A stage returns (outputs, note) to be recorded in the manifest, or None when it has
nothing to do (recorded as skipped). What a stage needs from an earlier one it reads
from the manifest, never from memory, so that any stage can be the first one run when an
interrupted run continues. kohyagen.run.pipeline runs them in order and keeps the books.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kohyagen import safe_io
from kohyagen.atomic import write_text_atomic
from kohyagen.dataset.layout import IMAGE_EXTENSIONS
from kohyagen.errors import (
    DatasetError,
    KohyagenError,
)
from kohyagen.run.context import RunContext
from kohyagen.run.dataset_hash import dataset_files, hash_dataset
from kohyagen.run.stages_config import stage_config
from kohyagen.run.stages_training import stage_estimate, stage_pick, stage_report, stage_train

# ---------------------------------------------------------------- helpers


def _missing_captions(train_dir: Path, caption_ext: str, *, exclude: Path) -> list[Path]:
    """Images kohya reads (the train dir and its N_name/ folders) that have no caption."""
    images = [
        p for p in dataset_files(train_dir, exclude=exclude) if p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    # os.path.isfile, as kohya: a caption name too long to exist is a missing caption
    return [p for p in images if not os.path.isfile(p.with_suffix(caption_ext))]


# ---------------------------------------------------------------- stages


def _stage_check(ctx: RunContext) -> tuple[dict[str, Any], str | None]:
    from kohyagen.dataset.check import check_dataset
    from kohyagen.findings import count_errors

    opts = ctx.options
    report = check_dataset(opts.images, model=opts.model, trigger=opts.trigger)
    findings = list(report.findings)
    if report.kind == "image_folder":
        # the prepare stage converts GIF, TIFF, AVIF, ... into what kohya reads: counting only
        # kohya's formats here would refuse (or undercount) images that run will train on
        findings = [f for f in findings if f.code not in ("no-images", "too-few-images")]
    errors = count_errors(findings)
    if errors:
        first = next(f for f in findings if f.severity.value == "error")
        raise DatasetError(
            f"the dataset check found {errors} error(s), first: {first.message}",
            path=first.file or opts.images,
            hint=(f"{first.fix}; " if first.fix else "")
            + f"`kohyagen dataset check {opts.images}` lists every problem",
        )
    digest = hash_dataset(opts.images, exclude=ctx.run_dir)
    ctx.manifest.update("dataset", source=digest.to_dict())
    outputs = {
        "kind": report.kind,
        "images": report.image_count,
        "images_x_repeats": report.images_x_repeats,
        "steps_per_epoch": report.steps_per_epoch,
        "caption_extension": report.caption_extension,
        "warnings": sum(1 for f in report.findings if f.severity.value == "warning"),
    }
    note = f"{report.image_count} images ({report.kind})"
    if outputs["warnings"]:
        note += (
            f", {outputs['warnings']} warning(s): `kohyagen dataset check {opts.images}` shows them"
        )
    return outputs, note


def _stage_prepare(ctx: RunContext) -> tuple[dict[str, Any], str | None] | None:
    opts = ctx.options
    check = ctx.out("check")
    if check.get("kind") == "train_dir":
        return _copy_if_tagging(ctx)
    from kohyagen.dataset.check import prepare_dataset

    out = ctx.run_dir / "training_data"
    if out.exists():
        # A prepare that was interrupted: its copies are ours, start them again.
        shutil.rmtree(out)
    # No trigger here: the tag stage must still see which images had no caption of their
    # own; it tags those and then puts the trigger first in every caption of this copy.
    result = prepare_dataset(opts.images, out, concept=opts.name, repeats="auto")
    ctx.manifest.update("dataset", training_data=hash_dataset(result.out_dir).to_dict())
    outputs = {
        "train_dir": str(result.out_dir),
        "subset_dir": str(result.subset_dir),
        "repeats": result.repeats,
        "copied": result.copied,
        "images": result.copied + result.converted,  # what training sees
        "converted": result.converted,
        "captions_written": result.captions_written,
    }
    return outputs, f"{outputs['images']} images into {result.subset_dir.name}/"


def _copy_if_tagging(ctx: RunContext) -> tuple[dict[str, Any], str | None] | None:
    """kohya's layout already: used in place, unless the tag stage would write captions
    into it; then it works on a linked copy in the run folder (the user's stays as it is)."""
    source = Path(ctx.options.images).resolve()
    ext = ctx.out("check").get("caption_extension") or ".txt"
    if not _missing_captions(source, ext, exclude=ctx.run_dir):
        return None
    from kohyagen.run.layout_copy import copy_train_dir

    out = ctx.run_dir / "training_data"
    count = copy_train_dir(source, out, exclude=ctx.run_dir)
    ctx.manifest.update("dataset", training_data=hash_dataset(out).to_dict())
    outputs = {"train_dir": str(out), "kept_layout": True, "copied": count}
    return outputs, f"images lack captions: {count} files linked into {out.name}/ to tag there"


def _stage_tag(ctx: RunContext) -> tuple[dict[str, Any], str | None] | None:
    train_dir = ctx.train_dir()
    prepared = ctx.out("prepare")
    # a prepare copy gets the trigger in every caption; a kept N_name layout keeps its own
    ours = bool(prepared.get("train_dir")) and not prepared.get("kept_layout")
    caption_ext = ctx.out("check").get("caption_extension") or ".txt"
    missing = _missing_captions(train_dir, caption_ext, exclude=ctx.run_dir)
    outputs: dict[str, Any] = {"caption_extension": caption_ext, "tagged": 0, "trigger_added": 0}
    notes = []
    if missing:
        from kohyagen.tagging.directory import tag_directory

        ctx.say("tag", f"{len(missing)} image(s) have no {caption_ext} caption: tagging them")
        model: dict[str, Any] = {"model": ctx.options.tagger} if ctx.options.tagger else {}
        result = tag_directory(
            train_dir,
            **model,
            trigger=ctx.options.trigger,
            caption_ext=caption_ext,
            mode="skip",
            recursive=True,
        )
        failed = _count(result.failed)
        if failed:
            first = next(iter(getattr(result, "failures", ()) or ()), None)
            raise KohyagenError(
                f"{failed} image(s) could not be tagged"
                + (f", first: {first.reason}" if first is not None else ""),
                path=getattr(first, "path", None) or train_dir,
                hint="write their captions by hand, or remove them, then run again",
            )
        outputs["tagged"] = _count(result.tagged)
        notes.append(f"tagged {outputs['tagged']} image(s)")
    if ours:
        # Our own copy of the user's captions: every caption gets the trigger first.
        outputs["trigger_added"] = _ensure_trigger(train_dir, caption_ext, ctx.options.trigger)
        if outputs["trigger_added"]:
            notes.append(
                f"trigger '{ctx.options.trigger}' put first in {outputs['trigger_added']} caption(s)"
            )
        ctx.manifest.update("dataset", training_data=hash_dataset(train_dir).to_dict())
    if not missing and not outputs["trigger_added"]:
        return None
    if missing and train_dir == Path(ctx.options.images).resolve():
        # The captions were written into the user's own train dir: that is now its content.
        source = hash_dataset(train_dir, exclude=ctx.run_dir).to_dict()
        ctx.manifest.update("dataset", source=source)
    return outputs, "; ".join(notes)


def _ensure_trigger(train_dir: Path, caption_ext: str, trigger: str) -> int:
    from kohyagen.dataset.captions import trigger_first

    changed = 0
    for caption in sorted(train_dir.rglob(f"*{caption_ext}")):
        try:
            text = safe_io.read_bytes(caption).decode("utf-8", errors="replace")
        except safe_io.NotRegularFile:
            continue  # a FIFO or device named *.txt: not a caption, and not ours to replace
        first, _, rest = text.partition("\n")
        updated = trigger_first(first, trigger)
        if updated != first.strip():
            # atomic, with a temp name that fits however long the caption's name is
            write_text_atomic(caption, updated + "\n" + rest)
            changed += 1
    return changed


def _count(value: Any) -> int:
    return value if isinstance(value, int) else len(value)


STAGE_FUNCTIONS: dict[str, Callable[[RunContext], Any]] = {
    "check": _stage_check,
    "prepare": _stage_prepare,
    "tag": _stage_tag,
    "config": stage_config,
    "estimate": stage_estimate,
    "train": stage_train,
    "report": stage_report,
    "pick": stage_pick,
}
SKIP_NOTES = {
    "prepare": "already in kohya's N_name/ layout: used in place",
    "tag": "every image has a caption",
}
