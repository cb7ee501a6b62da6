"""loss.png: the loss curves of a run with its checkpoints marked (matplotlib, Agg).

matplotlib is imported inside the function so that `kohyagen --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kohyagen.errors import KohyagenError
from kohyagen.report.checkpoints import rank

if TYPE_CHECKING:
    from kohyagen.report.run_data import RunData


def plot_losses(run: RunData, path: Path) -> Path | None:
    """loss.png: per-step and running-average loss, epoch averages, validation, checkpoints."""
    if not (run.current_loss or run.avg_loss_step or run.train_loss_epoch):
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    try:
        if run.current_loss:
            xs, ys = zip(*run.current_loss, strict=True)
            ax.plot(xs, ys, color="#9ecae1", linewidth=0.8, label="loss (per step)")
        if run.avg_loss_step:
            xs, ys = zip(*sorted(run.avg_loss_step.items()), strict=True)
            ax.plot(xs, ys, color="#08519c", linewidth=1.5, label="loss (running average)")
        epoch_points = [
            (run.epoch_end_step[e], v)
            for e, v in sorted(run.train_loss_epoch.items())
            if e in run.epoch_end_step
        ]
        if epoch_points:
            xs, ys = zip(*epoch_points, strict=True)
            ax.plot(xs, ys, "o-", color="#e6550d", label="epoch average")
        val_points = [
            (run.epoch_end_step[e], v)
            for e, v in sorted(run.val_loss_epoch.items())
            if e in run.epoch_end_step
        ]
        if val_points:
            xs, ys = zip(*val_points, strict=True)
            ax.plot(xs, ys, "s--", color="#31a354", label="validation (epoch)")
        best = None
        try:
            best = rank(run).path if run.checkpoints else None
        except KohyagenError:
            best = None
        for cp in run.checkpoints:
            if cp.step is None:
                continue
            chosen = cp.path == best
            ax.axvline(cp.step, color="#d62728" if chosen else "#999999",
                       linestyle="-" if chosen else ":", linewidth=1.5 if chosen else 1)  # fmt: skip
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        title = f"{run.output_name}: loss (dotted: checkpoints"
        ax.set_title(title + (", red: recommended)" if best else ")"))
        ax.legend(loc="best", fontsize=8, framealpha=0.8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp)
        tmp.replace(path)
    finally:
        plt.close(fig)
    return path
