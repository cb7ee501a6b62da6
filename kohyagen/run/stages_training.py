"""The training half of `kohyagen run`'s stages: estimate, train, report, pick.

Same contract as kohyagen.run.stages: each takes the run context and returns (outputs, note)
for the manifest, reading what earlier stages made from the manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kohyagen.errors import BudgetExceeded, KohyagenError, TrainingFailed, TrainingInterrupted
from kohyagen.run.versions import collect_versions

if TYPE_CHECKING:
    from kohyagen.run.context import RunContext


def _count(value: Any) -> int:
    return value if isinstance(value, int) else len(value)


def _images_seen(
    values: dict[str, Any], check: dict[str, Any], prepare: dict[str, Any]
) -> tuple[int, int | None]:
    """Images x repeats per epoch, and the steps per epoch where they are known."""
    # the most exact count available: the config's own plan, then prepare's repeats, then
    # the check's count of the source folder
    if values.get("images_x_repeats"):
        return values["images_x_repeats"], values.get("steps_per_epoch")
    if prepare.get("repeats"):
        return (prepare.get("images") or check["images"]) * int(prepare["repeats"]), None
    return check["images_x_repeats"], check.get("steps_per_epoch")


def stage_estimate(ctx: RunContext) -> tuple[dict[str, Any], str | None]:
    from kohyagen.estimate.plan import estimate, load_prices

    opts = ctx.options
    configs = ctx.manifest.data.get("configs", {})
    values = configs["values"]
    check = ctx.out("check")
    prepare = ctx.out("prepare")
    # prepare's count holds conversions (GIF, TIFF, AVIF); else the check's count
    images = prepare.get("images") or check["images"]
    seen, per_epoch = _images_seen(values, check, prepare)
    est = estimate(
        model=opts.model,
        gpu=configs["gpu"],
        images=images,
        images_x_repeats=seen,
        epochs=values["epochs"],
        batch_size=values["batch_size"],
        resolution=values["resolution"],
        steps_per_epoch=per_epoch,
        gradient_accumulation_steps=values["gradient_accumulation_steps"],
        gradient_checkpointing=values["gradient_checkpointing"],
        optimizer=values["optimizer"],
        unet_only=values["unet_only"],
        prices=load_prices(opts.prices_file),
        own_price_per_hour=opts.price_per_hour,
    )
    data = est.to_dict()
    ctx.manifest.update("estimate", **data)
    ctx.say("estimate", _estimate_line(est))
    # the upper end of the estimate is compared: a budget is a limit, not a hope
    if opts.budget is not None and est.budget_cost is not None and est.budget_cost > opts.budget:
        raise BudgetExceeded(
            f"estimated cost up to ${est.budget_cost:.2f} ({_estimate_basis(est)}, "
            f"{est.steps} steps) is above your budget of ${opts.budget:.2f}; nothing was trained",
            path=ctx.run_dir,
            hint="raise --budget, train fewer epochs (--epochs) or images, pick a cheaper "
            "GPU, or give your real price with --price-per-hour",
        )
    if opts.budget is not None and est.budget_cost is None:
        ctx.notes.append("no cost could be estimated for this machine, so --budget was not applied")
    if est.fits == "no":
        ctx.notes.append(f"memory: {est.notes[0] if est.notes else 'may not fit'}")
    # the library never prompts: the CLI's callback asks, after the estimate is shown
    if ctx.confirm is not None and not ctx.confirm(est):
        raise KohyagenError(
            "stopped before training: not confirmed",
            path=ctx.run_dir,
            hint="run the same command again to continue (add --yes to skip the question)",
        )
    if opts.budget is not None and est.budget_cost is not None:
        note = f"within your ${opts.budget:.2f} budget"
    else:
        note = f"{est.steps} steps"
    return {"steps": est.steps, "budget_cost": est.budget_cost}, note


def _estimate_basis(est: Any) -> str:
    if est.own_price_per_hour is not None:
        return f"at your ${est.own_price_per_hour:.2f}/hour"
    cheapest = min(est.costs, key=lambda c: c.cost[1])
    return f"the high end at the cheapest provider, {cheapest.label}"


def _estimate_line(est: Any) -> str:
    parts = [f"{est.steps} steps"]
    if est.total_minutes:
        low, high = est.total_minutes
        parts.append(f"{low:.0f}-{high:.0f} min on {est.gpu_label} ({est.certainty})")
    if est.budget_cost is not None:
        parts.append(f"up to ${est.budget_cost:.2f}")
    if est.fits in ("tight", "no"):
        parts.append(f"VRAM {est.fits}")
    return ", ".join(parts)


def stage_train(ctx: RunContext) -> tuple[dict[str, Any], str | None]:
    opts = ctx.options
    configs = ctx.manifest.data["configs"]
    _check_where_training_runs(ctx, configs.get("gpu"))
    from kohyagen.launch.train import train

    if opts.backend != "builtin":
        _record_sd_scripts(ctx)

    def on_progress(event: Any) -> None:
        ctx.say("train", format_progress(event))

    # a second start of this stage means the first was interrupted: continue from its state
    again = ctx.manifest.stage("train").get("attempts", 1) > 1
    state = latest_state(configs.get("resolved", {})) if again else None
    extra: list[str] = []
    if state is not None:
        # kohya's --resume loads weights, optimizer, scheduler and RNG state from the folder
        # (train_network.py:1231-1270); the builtin trainer takes the same flag
        extra = ["--resume", str(state.path)]
        ctx.say("train", f"continuing from the training state saved after epoch {state.epoch}")
    result = train(
        Path(configs["training"]),
        dataset_config=Path(configs["dataset"]),
        sd_scripts=opts.sd_scripts,
        run_dir=ctx.run_dir,
        backend=opts.backend,
        price_per_hour=opts.price_per_hour,
        on_progress=on_progress,
        # checkpoints left by our own interrupted attempt may be replaced
        overwrite=again,
        extra_args=extra,
    )
    status = str(getattr(result, "status", "succeeded"))
    if status == "interrupted":
        # as `kohyagen train` does: a Ctrl-C exits 130, not the 3 of a failed training
        raise TrainingInterrupted(
            "training interrupted",
            cause="interrupted",
            path=ctx.run_dir / "train.log",
            hint="run the same command again: it continues from the last saved epoch",
        )
    if hasattr(result, "raise_for_status"):
        result.raise_for_status()
    elif status not in ("ok", "succeeded"):
        raise TrainingFailed(
            f"training {status}: {getattr(result, 'failure', None) or 'see train.log'}",
            path=ctx.run_dir / "train.log",
            hint="fix the cause above, then run the same command again to retry training",
        )
    removed = _remove_states(configs) if configs.get("auto_save_state") else []
    outputs = {
        "states_removed": removed,
        "resumed_from_state": str(state.path) if state is not None else None,
        "status": status,
        "attempts": _count(getattr(result, "attempts", 1)),
        "command": [str(c) for c in getattr(result, "command", []) or []],
    }
    return outputs, f"finished after {outputs['attempts']} attempt(s)"


@dataclass(frozen=True)
class SavedState:
    path: Path
    epoch: int
    step: int


def latest_state(training: dict[str, Any]) -> SavedState | None:
    """The most advanced training state (save_state) in the config's output_dir, if any."""
    output_dir, name = training.get("output_dir"), training.get("output_name")
    if not output_dir or not name:
        return None
    best: SavedState | None = None
    # kohya's state folders: NAME-000002-state, NAME-step00000500-state, NAME-state
    for folder in Path(output_dir).glob(f"{name}*-state"):
        try:
            data = json.loads((folder / "train_state.json").read_text(encoding="utf-8"))
            found = SavedState(folder, int(data["current_epoch"]), int(data["current_step"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a state folder cut short by the interruption itself
        if best is None or (found.epoch, found.step) > (best.epoch, best.step):
            best = found
    return best


def _remove_states(configs: dict[str, Any]) -> list[str]:
    """The training states kohyagen asked for, once the training they protect is done."""
    import shutil

    training = configs.get("resolved", {})
    output_dir, name = training.get("output_dir"), training.get("output_name")
    if not output_dir or not name:
        return []
    removed = []
    for folder in sorted(Path(output_dir).glob(f"{name}*-state")):
        # only folders kohya itself finished writing: the marker file is written last
        if (folder / "train_state.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


def _check_where_training_runs(ctx: RunContext, gpu: str | None) -> None:
    """Refuse a training that would take days: configs made for a GPU on a machine without
    one, or a CPU run nobody asked for (--gpu auto found no GPU)."""
    if gpu == "cpu":
        # auto fell back to the CPU: almost certainly not what the user wanted
        if ctx.options.gpu.lower() == "auto":
            raise KohyagenError(
                "no NVIDIA GPU on this machine: training a real model on the CPU takes days",
                path=ctx.run_dir,
                hint="run this on a GPU machine, or pass --gpu cpu to train here anyway "
                "(practical only for tiny models such as `kohyagen demo`'s)",
            )
        return
    if gpu is None:
        return
    from kohyagen.estimate.hardware import detect

    hardware = detect()
    if hardware.has_gpu:
        return
    raise KohyagenError(
        f"the configs are for {gpu}, but {hardware.note.split(':')[0]}",
        path=ctx.run_dir,
        hint="continue this run on the GPU machine (copy the run folder and the images "
        "there and run the same command), or start a CPU run with --gpu cpu --restart",
    )


def format_progress(event: Any) -> str:
    """One line from the launcher's progress event (kohyagen.launch.watch.Progress)."""
    message = getattr(event, "message", None)
    if message:
        return str(message)
    step, total = getattr(event, "step", None), getattr(event, "total_steps", None)
    if step is None:
        return str(event)
    parts = [f"step {step}/{total or '?'}"]
    epoch, epochs = getattr(event, "epoch", None), getattr(event, "total_epochs", None)
    if epoch is not None:
        parts.append(f"epoch {epoch}/{epochs or '?'}")
    loss = getattr(event, "loss", None)
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    eta = getattr(event, "eta_s", None)
    if eta is not None:
        parts.append(f"eta {eta / 60:.1f} min" if eta >= 90 else f"eta {eta:.0f} s")
    cost = getattr(event, "cost", None)
    if cost is not None:
        parts.append(f"${cost:.2f} so far")
    return ", ".join(parts)


def _record_sd_scripts(ctx: RunContext) -> None:
    try:
        from kohyagen.launch.checkout import find_sd_scripts

        path = find_sd_scripts(ctx.options.sd_scripts)
    except KohyagenError:
        if ctx.options.backend == "kohya":
            raise
        return  # backend auto without sd-scripts: the builtin trainer will run
    # the sd-scripts revision goes into the manifest: a LoRA names the code that made it
    ctx.manifest.update("versions", **collect_versions(path))


def stage_report(ctx: RunContext) -> tuple[dict[str, Any], str | None]:
    from kohyagen.report.summary import write_report

    write_report(ctx.run_dir)
    outputs = {
        name: str(ctx.run_dir / name)
        for name in ("summary.json", "summary.md", "loss.png", "report.html")
        if (ctx.run_dir / name).is_file()
    }
    plot = ", loss.png" if "loss.png" in outputs else ""
    return outputs, f"summary.json, summary.md{plot}, report.html"


def stage_pick(ctx: RunContext) -> tuple[dict[str, Any], str | None]:
    from kohyagen.report.pick import pick

    choice = pick(ctx.run_dir)
    outputs = {
        "lora": str(choice.path),
        "best": str(choice.best_path) if choice.best_path else None,
        "epoch": choice.epoch,
        "step": choice.step,
        "reason": choice.reason,
    }
    return outputs, f"{Path(choice.path).name}: {choice.reason}"
