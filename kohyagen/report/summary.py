"""Run reports: summary.json, summary.md, loss.png and report.html for a run folder.

summarize() turns a loaded run (run_folder.load_run) into summary.json's content: status,
progress, losses, cost, checkpoints and the pick; write_report() writes it with the
Markdown (markdown), the plot (plot) and the HTML page (html) beside it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from kohyagen.errors import KohyagenError
from kohyagen.launch.attempts import atomic_write_text
from kohyagen.report.checkpoints import rank
from kohyagen.report.family import grad_norm, lora_format
from kohyagen.report.markdown import render_markdown
from kohyagen.report.run_data import RunData
from kohyagen.report.run_folder import load_run, max_step, planned_epochs


def _seconds_per_step(run: RunData) -> float | None:
    if run.log and run.log.seconds_per_step:
        return run.log.seconds_per_step
    return None


def summarize(run: RunData) -> dict:
    """The run's summary.json: status, progress, losses, cost, checkpoints and the pick."""
    state = run.state or {}
    log = run.log
    status = state.get("status") or ("succeeded" if log and log.model_saved else "unknown")
    if status == "running" and state.get("pid") and not _alive(state.get("pid")):
        status = "stopped"  # kohyagen died without recording the end
    failure = state.get("failure")
    ended_by = failure.get("code") if isinstance(failure, dict) else (
        "finished" if status == "succeeded" else status
    )  # fmt: skip
    started = state.get("started_at")
    ended = state.get("ended_at")
    duration = (ended or time.time()) - started if started else (log.elapsed_s if log else None)
    price = state.get("price_per_hour")
    cost = state.get("cost")
    if cost is None and price is not None and duration is not None:
        cost = round(price * duration / 3600, 4)
    step = log.step if log else max_step(run.scalars) or 0
    total_steps = log.total_steps if log else None
    epochs_done = _epochs_done(run)
    total_epochs = planned_epochs(log, run.training)
    recommendation = _recommendation(run)
    return {
        "run_dir": str(run.run_dir),
        "status": status,
        "ended_by": ended_by,
        "failure": failure,
        "output_name": run.output_name,
        "steps": {"done": step, "total": total_steps},
        "epochs": {"done": epochs_done, "total": total_epochs},
        "loss_per_epoch": _by_epoch(run.train_loss_epoch, run.epoch_end_step),
        "validation_loss_per_epoch": _by_epoch(run.val_loss_epoch, run.epoch_end_step),
        "final_loss": run.avg_loss_step[max(run.avg_loss_step)] if run.avg_loss_step else None,
        "speed": {
            "seconds_per_step": _seconds_per_step(run),
            "training_seconds": log.elapsed_s if log else None,
        },
        "duration_s": round(duration, 1) if duration is not None else None,
        "price_per_hour": price,
        "cost": cost,
        "attempts": len(state.get("attempts") or []) or None,
        "checkpoints": [cp.to_dict() for cp in run.checkpoints],
        "recommended": recommendation,
        "samples": run.samples,
        "lora_format": lora_format(run.script, run.training),
        "grad_norm": grad_norm(run.scalars),
        "sources": {
            "log": str(run.run_dir / "train.log") if log else None,
            "events": [str(p) for p in run.event_files],
        },
    }


def _recommendation(run: RunData) -> dict[str, Any] | None:
    """The checkpoint rank() would pick, or None when there is nothing to pick from."""
    recommendation = None
    if run.checkpoints:
        try:
            choice = rank(run)
            recommendation = {
                "file": choice.path.name, "epoch": choice.epoch, "step": choice.step,
                "reason": choice.reason, "by": choice.by, "verdict": choice.verdict,
                "flags": choice.flags,
            }  # fmt: skip
        except KohyagenError:
            recommendation = None
    return recommendation


def _epochs_done(run: RunData) -> int:
    """Epochs finished by the run (from its log and its TensorBoard epoch averages)."""
    log = run.log
    # an epoch is done once the next one started, the run saved its model, or kohya
    # logged its average; the current epoch of a running run is not
    from_log = (log.epoch if log.model_saved else max(log.epoch - 1, 0)) if log else 0
    logged = [step for step, _value in run.scalars.get("loss/epoch_average", [])]
    epochs_done = max([from_log, *logged])
    return epochs_done


def _alive(pid: Any) -> bool:
    import os

    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def _by_epoch(values: dict[int, float], end_step: dict[int, int]) -> list[dict]:
    return [
        {"epoch": e, "loss": None if not math.isfinite(v) else v, "step": end_step.get(e)}
        for e, v in sorted(values.items())
    ]


def _json_safe(value: Any) -> Any:
    """NaN and infinity (a diverged run) become null: summary.json stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_report(run_dir: str | Path) -> dict:
    """Write summary.json, summary.md, loss.png and report.html in the run folder; return the
    summary."""
    run = load_run(run_dir)
    summary = _json_safe(summarize(run))
    from kohyagen.report.plot import plot_losses

    plot = plot_losses(run, run.run_dir / "loss.png")
    summary["plot"] = str(plot) if plot else None
    summary["html"] = str(run.run_dir / "report.html")
    atomic_write_text(
        run.run_dir / "summary.json",
        json.dumps(summary, indent=2, ensure_ascii=False, default=str, allow_nan=False),
    )
    atomic_write_text(run.run_dir / "summary.md", render_markdown(summary, run, plot))
    from kohyagen.report.html import write_html

    write_html(summary, run, run.run_dir / "report.html")
    return summary
