"""`kohyagen run`: check → prepare → tag → config → estimate → train → report → pick.

Each stage is a function of the run context; the loop in run_pipeline records its start,
end, outputs or error in the run manifest (kohyagen.json) before moving on. A stage that
needs something an earlier stage made reads it from the manifest, so a run started again
on the same run dir continues at the first unfinished stage with nothing redone. The
library never prompts: confirmation before training is a callback the CLI provides.
Opening the run folder (fresh, continued, refused or restarted) is run.folder's; the
RunResult handed back is built from the manifest by run.result.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from kohyagen.errors import (
    DatasetError,
    KohyagenError,
    RunStateError,
    UsageError,
    from_os_error,
)
from kohyagen.run.context import Confirm, Progress, RunContext, RunOptions
from kohyagen.run.folder import open_run_dir
from kohyagen.run.manifest import MANIFEST_NAME, STAGES, Manifest
from kohyagen.run.result import RunResult, collect_result
from kohyagen.run.stages import SKIP_NOTES, STAGE_FUNCTIONS
from kohyagen.validate import name_problem, number_problem, require, trigger_problem

# the launcher's backends (kohyagen.launch.train), checked here so that a wrong one fails
# before the dataset stages instead of at the train stage
BACKENDS = ("auto", "kohya", "builtin")


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
    if options.model_files:
        from kohyagen.config.presets import get_model
        from kohyagen.config.render_flags import check_model_file_roles

        # as config does: a file the model does not take fails before check, prepare, tag
        check_model_file_roles(get_model(options.model), (r for r, _ in options.model_files))


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
    manifest, fresh = open_run_dir(options, notes)
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
    return collect_result(manifest, options, resumed_from, already, ctx.notes)


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
