"""The stages of `kohyagen run`, each a function of the run context.

A stage returns (outputs, note) to be recorded in the manifest, or None when it has
nothing to do (recorded as skipped). What a stage needs from an earlier one it reads
from the manifest, never from memory, so that any stage can be the first one run when an
interrupted run continues. kohyagen.run.pipeline runs them in order and keeps the books.
"""

from __future__ import annotations

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
from kohyagen.run.context import RunContext, RunOptions
from kohyagen.run.dataset_hash import dataset_files, hash_dataset
from kohyagen.run.stages_training import stage_estimate, stage_pick, stage_report, stage_train

CPU = "cpu"
CPU_RENDER_PRESET = "80gb"


# ---------------------------------------------------------------- helpers


def _gpu_name(options: RunOptions) -> tuple[str, str | None]:
    if options.gpu.lower() != "auto":
        return options.gpu, None
    from kohyagen.estimate.hardware import detect_preset

    preset, hardware = detect_preset()
    if preset == "cpu":
        return preset, hardware.note
    return preset, f"{hardware.gpus[0].name} → GPU preset {preset}"


def _missing_captions(train_dir: Path, caption_ext: str, *, exclude: Path) -> list[Path]:
    """Images kohya reads (the train dir and its N_name/ folders) that have no caption."""
    images = [
        p for p in dataset_files(train_dir, exclude=exclude) if p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return [p for p in images if not p.with_suffix(caption_ext).is_file()]


def _training_values(rendered_training: dict[str, Any], dataset_data: dict[str, Any]) -> dict:
    from kohyagen.config.plan_values import training_values

    return training_values(rendered_training, dataset_data)


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


def _train_dir(ctx: RunContext) -> Path:
    prepared = ctx.out("prepare").get("train_dir")
    return Path(prepared) if prepared else Path(ctx.options.images).resolve()


def _stage_tag(ctx: RunContext) -> tuple[dict[str, Any], str | None] | None:
    train_dir = _train_dir(ctx)
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


def _config_overrides(ctx: RunContext, gpu: str) -> tuple[list[str], bool, str]:
    """The --set overrides plus the run's own (seed, save_state, CPU precision); whether
    save_state was added, and the GPU preset to render for."""
    opts = ctx.options
    overrides = list(opts.overrides)
    given = {o.split("=", 1)[0].strip().split(".")[-1] for o in overrides}
    if opts.seed is not None and "seed" not in given:
        overrides.append(f"seed={opts.seed}")
    auto_state = not given & {"save_state", "save_state_on_train_end", "save_last_n_epochs_state"}
    if auto_state:
        # A training state with each checkpoint (only the latest kept): an interrupted
        # run continues from its last epoch instead of starting over. Removed after a
        # successful training (see stages_training), since only a resume needs it.
        overrides += ["save_state=true", "save_last_n_epochs_state=1"]
    render_gpu = gpu
    if gpu == CPU:
        # No GPU preset describes a CPU: render for a roomy generic card, in full precision.
        render_gpu = CPU_RENDER_PRESET
        if "mixed_precision" not in given:
            overrides.append("mixed_precision=no")
        ctx.notes.append(
            "no GPU: configs rendered for the generic "
            f"{CPU_RENDER_PRESET} preset with mixed_precision=no, to train on the CPU"
        )
    return overrides, bool(auto_state), render_gpu


def _refuse_lint_errors(rendered: Any, run_dir: Path) -> None:
    """Stop before training when the rendered configs have a lint error."""
    from kohyagen.config.lint import lint_files
    from kohyagen.findings import count_errors

    findings = lint_files([rendered.training_path, rendered.dataset_path], cwd=run_dir)
    if count_errors(findings):
        from kohyagen.errors import LintFailed

        first = next(f for f in findings if f.severity.value == "error")
        raise LintFailed(
            f"the rendered config has {count_errors(findings)} error(s), first: "
            f"{first.key or ''} {first.message}",
            findings,
            path=first.file or rendered.training_path,
            hint=first.fix or "fix the --set override that caused it",
        )


def _stage_config(ctx: RunContext) -> tuple[dict[str, Any], str | None]:
    """Render, write and lint the configs for this run; record them in the manifest."""
    from kohyagen.config.render import render_configs, write_configs

    opts = ctx.options
    gpu, gpu_note = _gpu_name(opts)
    if gpu_note:
        ctx.say("config", f"GPU: {gpu_note}")
    overrides, auto_state, render_gpu = _config_overrides(ctx, gpu)
    rendered = render_configs(
        _train_dir(ctx),
        model=opts.model,
        gpu=render_gpu,
        out_dir=ctx.run_dir,
        name=opts.name,
        trigger=opts.trigger,
        base_model=opts.base_model,
        overrides=tuple(overrides),
        epochs=opts.epochs,
    )
    # This stage owns these two files; an interrupted earlier attempt may have left them.
    write_configs(rendered, force=True)
    _refuse_lint_errors(rendered, ctx.run_dir)
    from kohyagen.config.schema import load_toml

    dataset_data = load_toml(rendered.dataset_path).data
    values = _training_values(dict(rendered.training), dataset_data)
    plan = getattr(rendered, "plan", None) or {}
    if plan.get("images_x_repeats"):
        # render knows what kohya will train on per epoch (after a validation split)
        values["images_x_repeats"] = plan["images_x_repeats"]
        values["steps_per_epoch"] = plan.get("steps_per_epoch")
    ctx.manifest.set("seed", values["seed"])
    ctx.manifest.update(
        "configs",
        training=str(rendered.training_path),
        dataset=str(rendered.dataset_path),
        gpu=gpu,
        resolved=dict(rendered.training),
        auto_save_state=bool(auto_state),
        values=values,
        notes=list(rendered.notes),
    )
    outputs = {
        "training_config": str(rendered.training_path),
        "dataset_config": str(rendered.dataset_path),
        "gpu": gpu,
    }
    return outputs, f"{rendered.training_path.name} for {gpu}"


STAGE_FUNCTIONS: dict[str, Callable[[RunContext], Any]] = {
    "check": _stage_check,
    "prepare": _stage_prepare,
    "tag": _stage_tag,
    "config": _stage_config,
    "estimate": stage_estimate,
    "train": stage_train,
    "report": stage_report,
    "pick": stage_pick,
}
SKIP_NOTES = {
    "prepare": "already in kohya's N_name/ layout: used in place",
    "tag": "every image has a caption",
}
