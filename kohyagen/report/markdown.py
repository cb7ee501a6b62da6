"""summary.md: the run's summary (as summary.summarize makes it) written as Markdown.

Kept apart from summary.py, which decides what the summary holds: this module only lays
out what is already there (status lines, the loss and checkpoint tables, sample images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kohyagen.report.run_data import RunData


def render_markdown(summary: dict, run: RunData, plot: Path | None) -> str:
    """summary.md for the run: plot is loss.png, or None when none was drawn."""
    s = summary
    lines = [f"# Training run: {s['output_name']}", ""]
    ended = s["ended_by"]
    why = f" (ended by: {ended})" if ended and ended != s["status"] else ""
    lines.append(f"- status: **{s['status']}**{why}")
    if s.get("failure"):
        lines.append(f"- cause: {s['failure'].get('cause')}")
        lines.append(f"- fix: {s['failure'].get('fix')}")
    lines.append(f"- steps: {s['steps']['done']}/{s['steps']['total'] or '?'}; "
                 f"epochs: {s['epochs']['done']}/{s['epochs']['total'] or '?'}")  # fmt: skip
    if s["speed"]["seconds_per_step"]:
        lines.append(f"- speed: {s['speed']['seconds_per_step']:.3g} s/step")
    if s["duration_s"] is not None:
        lines.append(f"- duration: {_hms(s['duration_s'])}")
    if s["cost"] is not None:
        lines.append(f"- cost: ${s['cost']:.2f} at ${s['price_per_hour']}/h")
    if s.get("attempts") and s["attempts"] > 1:
        lines.append(f"- attempts: {s['attempts']} (see attempts/ and train.json)")
    lines.append(f"- LoRA for {s['lora_format']['family']}; loads in: {s['lora_format']['apps']}")
    if s.get("grad_norm"):
        g = s["grad_norm"]
        lines.append(f"- gradient norm ({g['tag']}): first {_num(g['first'])}, last "
                     f"{_num(g['last'])}, max {_num(g['max'])}")  # fmt: skip
    if s["recommended"]:
        lines += ["", f"**Use {s['recommended']['file']}**: {s['recommended']['reason']}."]
    if plot is not None:
        lines += ["", f"![loss]({plot.name})"]
    val = {row["epoch"]: row["loss"] for row in s["validation_loss_per_epoch"]}
    if s["loss_per_epoch"] or val:
        lines += ["", "| epoch | step | training loss | validation loss |", "|---:|---:|---:|---:|"]
        epochs = sorted({row["epoch"] for row in s["loss_per_epoch"]} | set(val))
        train = {row["epoch"]: row for row in s["loss_per_epoch"]}
        for e in epochs:
            t = train.get(e, {})
            lines.append(
                f"| {e} | {run.epoch_end_step.get(e, '')} | {_num(t.get('loss'))} | {_num(val.get(e))} |"
            )
    if s["checkpoints"]:
        lines += ["", "| checkpoint | epoch | step | size |", "|---|---:|---:|---:|"]
        for cp in s["checkpoints"]:
            lines.append(
                f"| {cp['file']} | {cp['epoch'] or ''} | {cp['step'] or ''} | {_size(cp['bytes'])} |"
            )
    if s["samples"]:
        lines += ["", "## Samples"]
        for key, paths in s["samples"].items():
            lines += ["", f"### {key}", ""]
            lines += [f"![{key}]({_relative(Path(p), run.run_dir)})" for p in paths]
    return "\n".join(lines) + "\n"


def _relative(path: Path, base: Path) -> str:
    import os

    try:
        return os.path.relpath(path, base)
    except ValueError:
        return str(path)


def _size(size: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else ""


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
