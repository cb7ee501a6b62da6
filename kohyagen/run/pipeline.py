"""`kohyagen run`: check → prepare → tag → config → estimate → train → report → pick.

Each stage is a function of the run context; the loop in run_pipeline records its start,
end, outputs or error in the run manifest (kohyagen.json) before moving on. A stage that
needs something an earlier stage made reads it from the manifest, so a run started again
on the same run dir continues at the first unfinished stage with nothing redone. The
library never prompts: confirmation before training is a callback the CLI provides.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kohyagen.errors import (
    DatasetError,
    KohyagenError,
    RunStateError,
    UsageError,
    from_os_error,
)
from kohyagen.run.context import Confirm, Progress, RunContext, RunOptions, local_or_repo
from kohyagen.run.manifest import (
    MANIFEST_NAME,
    STAGES,
    DatasetHash,
    Manifest,
    describe_change,
    hash_dataset,
)
from kohyagen.run.stages import SKIP_NOTES, STAGE_FUNCTIONS
from kohyagen.validate import name_problem, number_problem, require, trigger_problem

BACKENDS = ("auto", "kohya", "builtin")
SUGGESTED_WEIGHT = 0.8
# Inputs that define what a run produces: a run dir continued with other values for
# these would mix two different runs, so it is refused (see RunOptions.identity in
# kohyagen.run.context).
IDENTITY_KEYS = (
    "images",
    "name",
    "trigger",
    "model",
    "base_model",
    "epochs",
    "overrides",
    "seed",
)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    manifest: Path
    name: str
    trigger: str
    model: str
    lora: Path | None
    epoch: int | None
    reason: str | None
    summary_json: Path | None
    loss_png: Path | None
    suggested_weight: float
    stages: tuple[tuple[str, str, str | None], ...]
    resumed_from: str | None  # the stage this invocation started at, None for a fresh run
    already_finished: bool = False
    estimate: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()
    gpu: str | None = None  # the GPU preset the configs were made for ("cpu" without one)
    seconds: tuple[tuple[str, float], ...] = ()  # (stage, seconds) of each finished stage
    report_html: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "manifest": str(self.manifest),
            "name": self.name,
            "trigger": self.trigger,
            "model": self.model,
            "lora": str(self.lora) if self.lora else None,
            "epoch": self.epoch,
            "reason": self.reason,
            "summary_json": str(self.summary_json) if self.summary_json else None,
            "loss_png": str(self.loss_png) if self.loss_png else None,
            "suggested_weight": self.suggested_weight,
            "stages": [{"stage": s, "status": st, "note": n} for s, st, n in self.stages],
            "resumed_from": self.resumed_from,
            "already_finished": self.already_finished,
            "estimate": self.estimate,
            "notes": list(self.notes),
            "gpu": self.gpu,
            "seconds": dict(self.seconds),
            "report_html": str(self.report_html) if self.report_html else None,
        }


# ---------------------------------------------------------------- the run


def _open_run_dir(options: RunOptions, notes: list[str]) -> tuple[Manifest, bool]:
    """The manifest to work on, and whether it is a fresh run (notes get what to tell)."""
    run_dir = options.resolved_run_dir()
    try:
        existing = Manifest.load(run_dir)
        damaged = False
    except RunStateError:
        if not options.restart:
            raise
        existing, damaged = None, True  # --restart always works, even on a broken manifest
    left: set[str] = {"previous"}
    if options.restart and (existing is not None or damaged):
        left |= _move_aside(run_dir, Path(options.images).resolve())
        existing = None
    if existing is None:
        if run_dir.exists() and any(p.name not in left for p in run_dir.iterdir()):
            raise RunStateError(
                "the run folder exists, is not empty and is not a kohyagen run",
                path=run_dir,
                hint="pass another --run-dir (nothing in it was changed)",
            )
        return Manifest.create(run_dir, inputs=options.to_inputs()), True
    _follow_moves(existing, options, run_dir, notes)
    _check_same_inputs(existing, options, run_dir, notes)
    inputs = existing.data["inputs"]
    for key in ("gpu", "budget", "backend", "price_per_hour"):
        inputs[key] = options.to_inputs()[key]
    existing.save()
    return existing, False


def _check_same_inputs(
    existing: Manifest, options: RunOptions, run_dir: Path, notes: list[str]
) -> None:
    """Refuse to continue a run with other inputs or changed images; note an edited
    prepared copy (allowed: captions are often fixed by hand after --prepare-only)."""
    old = {k: existing.data.get("inputs", {}).get(k) for k in IDENTITY_KEYS}
    new = options.identity()
    differ = [k for k in IDENTITY_KEYS if old.get(k) != new[k]]
    if differ:
        detail = ", ".join(f"{k}: {old.get(k)!r} → {new[k]!r}" for k in differ)
        raise RunStateError(
            f"this run folder was started with other inputs ({detail})",
            path=run_dir,
            hint="pass --restart to start it over (the old files are kept under previous/), "
            "or another --run-dir",
        )
    recorded = existing.data.get("dataset", {}).get("source")
    if recorded and existing.is_finished("check"):
        now = hash_dataset(options.images, exclude=run_dir)
        before = DatasetHash.from_dict(recorded)
        if now.digest != before.digest:
            raise RunStateError(
                f"the images changed since this run checked them: {describe_change(before, now)}",
                path=options.images,
                hint="pass --restart to train on the new images from the start (the old "
                "run is kept under previous/), or restore the images to continue",
            )
    copy = existing.data.get("dataset", {}).get("training_data")
    train_dir = existing.outputs("prepare").get("train_dir")
    if copy and train_dir and not existing.is_finished("train") and Path(train_dir).is_dir():
        before, now = DatasetHash.from_dict(copy), hash_dataset(train_dir)
        if now.digest != before.digest:
            # Editing captions in the prepared copy (e.g. after --prepare-only) is allowed.
            notes.append(
                f"the prepared copy in {train_dir} changed since it was made "
                f"({describe_change(before, now)}): training uses it as it is now"
            )
            existing.update("dataset", training_data=now.to_dict())


def _follow_moves(manifest: Manifest, options: RunOptions, run_dir: Path, notes: list) -> None:
    """A run folder copied to another place (or machine), or its images passed from
    another folder with the same content: rewrite the recorded paths to the new ones."""
    from kohyagen.run.relocate import relocate

    moves: list[tuple[str, str]] = []
    made_in = manifest.data.get("run_dir")
    if made_in and made_in != str(run_dir):
        moves.append((made_in, str(run_dir)))
    old_images = manifest.data.get("inputs", {}).get("images")
    new_images = str(Path(options.images).resolve())
    recorded = manifest.data.get("dataset", {}).get("source")
    moved_images = (
        old_images
        and old_images != new_images
        and recorded
        and manifest.is_finished("check")
        and Path(new_images).is_dir()
        and hash_dataset(new_images, exclude=run_dir).digest == recorded.get("digest")
    )
    if moved_images:
        moves.append((old_images, new_images))
    old_model = manifest.data.get("inputs", {}).get("base_model")
    new_model = local_or_repo(options.base_model)
    moved_model = (
        old_model
        and new_model
        and old_model != new_model
        and Path(old_model).is_absolute()
        and not Path(old_model).exists()  # it was a local file on the other machine
        and Path(new_model).exists()
        and Path(old_model).name == Path(new_model).name
    )
    if moved_model and new_model:
        moves.append((old_model, new_model))
    if not moves:
        return
    relocate(manifest, moves)
    manifest.data["run_dir"] = str(run_dir)
    manifest.save()
    notes.append(
        "paths updated in kohyagen.json and the configs: "
        + "; ".join(f"{old} → {new}" for old, new in moves)
    )


# What a run writes in its folder; --restart moves only these aside (train-N.log are
# earlier logs kept by the launcher, dot-names kohyagen's temp files).
OWN_ENTRIES = frozenset({
    "kohyagen.json", "training_data", "training_config.toml", "dataset_config.toml",
    "sample_prompts.txt", "train.log", "train.json", "attempts", "logs", "output",
    "summary.json", "summary.md", "loss.png", "report.html", "queue.log",
})  # fmt: skip


def _is_own(entry: Path) -> bool:
    name = entry.name
    if name in OWN_ENTRIES or (name.startswith("train-") and name.endswith(".log")):
        return True
    return name.startswith(".") and (name.endswith(".tmp") or ".kohyagen-tmp" in name)


def _move_aside(run_dir: Path, images: Path) -> set[str]:
    """Move the run's own files under previous/<time>/; return the names left in place:
    the images (when the user keeps them in the run folder) and anything not kohyagen's."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = run_dir / "previous" / stamp
    target.mkdir(parents=True)
    left = set()
    for entry in list(run_dir.iterdir()):
        if entry.name == "previous":
            continue
        holds_images = images == entry.resolve() or entry.resolve() in images.parents
        if holds_images or not _is_own(entry):
            left.add(entry.name)
            continue
        shutil.move(str(entry), str(target / entry.name))
    return left


def _validate(options: RunOptions) -> None:
    if options.backend not in BACKENDS:
        raise UsageError(f"unknown backend {options.backend!r}", hint="auto, kohya or builtin")
    require(name_problem(options.name, "--name"), hint="e.g. --name my_style")
    require(trigger_problem(options.trigger), hint="e.g. --trigger sks")
    for what, value in (("--budget", options.budget), ("--price-per-hour", options.price_per_hour)):
        if value is not None:
            require(number_problem(value, what, low=0), hint="an amount of dollars, e.g. 2.5")
    if not Path(options.images).is_dir():
        raise DatasetError(
            "images folder not found", path=options.images, hint="pass the folder of your images"
        )
    if options.gpu.lower() not in ("auto", "cpu"):
        from kohyagen.config.presets import get_gpu

        get_gpu(options.gpu)  # an unknown name fails now, not after the dataset stages


def run_pipeline(
    options: RunOptions,
    *,
    progress: Progress | None = None,
    confirm: Confirm | None = None,
    stop_after: str | None = None,
) -> RunResult:
    """Run (or continue) the whole pipeline in options.run_dir.

    progress(stage, message) receives status lines; confirm(estimate) is asked once
    before training (None: do not ask). stop_after ends the run after that stage.
    Raises the stage's KohyagenError after recording it as failed in the manifest.
    """
    _validate(options)
    notes: list[str] = []
    manifest, fresh = _open_run_dir(options, notes)
    ctx = RunContext(
        options, manifest, manifest.run_dir, progress or (lambda s, m: None), confirm, notes
    )
    for line in notes:
        ctx.say("run", line)
    resumed_from = None if fresh else manifest.first_unfinished()
    already = not fresh and resumed_from is None
    if already:
        _require_lora(manifest)
        ctx.say("run", "this run has already finished: nothing to do")
    elif resumed_from is not None:
        ctx.say(
            "run",
            f"continuing at stage '{resumed_from}' ({MANIFEST_NAME} records the earlier "
            "stages as done)",
        )
    last = STAGES.index(stop_after) if stop_after is not None else len(STAGES) - 1
    for stage in STAGES[: last + 1]:
        # A run prepared before (stop_after already reached) stops here too instead of
        # going on to the stages after stop_after.
        if manifest.is_finished(stage):
            continue
        manifest.start(stage)
        ctx.say(stage, "started")
        outcome = _run_stage(stage, ctx, manifest)
        if outcome is None:
            manifest.finish(stage, skipped=True, note=SKIP_NOTES.get(stage))
            ctx.say(stage, f"skipped: {SKIP_NOTES.get(stage, '')}")
        else:
            outputs, note = outcome
            manifest.finish(stage, outputs=outputs, note=note)
            if stage == "train":
                _remember_throughput(manifest)
            ctx.say(stage, f"done: {note}" if note else "done")
    return _result(manifest, options, resumed_from, already, ctx.notes)


def _run_stage(
    stage: str, ctx: RunContext, manifest: Manifest
) -> tuple[dict[str, Any], str | None] | None:
    """One stage; whatever ends it early is recorded in the manifest before it goes on up."""
    try:
        return STAGE_FUNCTIONS[stage](ctx)
    except KohyagenError as exc:
        manifest.fail(stage, str(exc))
        raise
    except KeyboardInterrupt:
        manifest.fail(stage, "interrupted")
        raise
    except OSError as exc:
        # disk full, read-only, ...: a known problem, recorded as one (never "running")
        known = from_os_error(exc, training=stage == "train")
        _record_failure(manifest, stage, str(known) if known else f"OSError: {exc}")
        if known is not None:
            raise known from exc
        raise
    except Exception as exc:
        manifest.fail(stage, f"{type(exc).__name__}: {exc}")
        raise


def _require_lora(manifest: Manifest) -> None:
    """A finished run is only "LoRA ready" while the LoRA it chose is still there."""
    lora = manifest.outputs("pick").get("lora")
    if isinstance(lora, str) and not Path(lora).is_file():
        raise RunStateError(
            "this run finished, but the LoRA it chose is no longer there",
            path=lora,
            hint="put the file back, or pass --restart to train again (the old files "
            "are kept under previous/)",
        )


def _record_failure(manifest: Manifest, stage: str, message: str) -> None:
    # the disk that is full may hold the manifest too; the error still reaches the user
    with contextlib.suppress(OSError):
        manifest.fail(stage, message)


def _remember_throughput(manifest: Manifest) -> None:
    """Record how fast this GPU trained, for later estimates; never fails the run."""
    from kohyagen.estimate import measurements

    try:
        measurement = measurements.from_manifest(manifest)
        if measurement is not None:
            measurements.record(measurement)
    except OSError:
        pass  # a read-only home is no reason to lose a finished training


def _durations(manifest: Manifest) -> list[tuple[str, float]]:
    out = []
    for stage in STAGES:
        record = manifest.stage(stage)
        if record.get("started") and record.get("finished"):
            start = datetime.fromisoformat(record["started"])
            end = datetime.fromisoformat(record["finished"])
            out.append((stage, (end - start).total_seconds()))
    return out


def _result(
    manifest: Manifest,
    options: RunOptions,
    resumed_from: str | None,
    already: bool,
    notes: list[str],
) -> RunResult:
    pick = manifest.outputs("pick")
    report = manifest.outputs("report")
    lora = Path(pick["lora"]) if pick.get("lora") else None
    return RunResult(
        run_dir=manifest.run_dir,
        manifest=manifest.path,
        name=options.name,
        trigger=options.trigger,
        model=options.model,
        lora=lora,
        epoch=pick.get("epoch"),
        reason=pick.get("reason"),
        summary_json=Path(report["summary.json"]) if report.get("summary.json") else None,
        loss_png=Path(report["loss.png"]) if report.get("loss.png") else None,
        suggested_weight=SUGGESTED_WEIGHT,
        stages=tuple(manifest.summary()),
        resumed_from=resumed_from,
        already_finished=already,
        estimate=manifest.data.get("estimate") or None,
        notes=tuple(notes),
        gpu=manifest.data.get("configs", {}).get("gpu"),
        seconds=tuple(_durations(manifest)),
        report_html=Path(report["report.html"]) if report.get("report.html") else None,
    )
