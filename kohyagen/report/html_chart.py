"""The loss chart of report.html as inline SVG: drawn by the browser, no script, no files.

Series: the loss of each step (light), its running average, the epoch averages and the
validation loss (dots at each epoch's last step), with the checkpoints as vertical lines
(the picked one red), like loss.png.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from kohyagen.report.run_data import RunData

WIDTH, HEIGHT = 860, 340
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 20, 40
SERIES = {
    "step": ("#9ecae1", "loss (per step)"),
    "average": ("#08519c", "loss (running average)"),
    "epoch": ("#e6550d", "epoch average"),
    "validation": ("#31a354", "validation (epoch)"),
}


def chart_series(run: RunData) -> dict[str, list[tuple[float, float]]]:
    """The finite points of each series, by step."""
    def finite(points: list[tuple[int, float]]) -> list[tuple[float, float]]:
        return [(float(s), float(v)) for s, v in points if math.isfinite(v)]

    def at_epoch_end(values: dict[int, float]) -> list[tuple[int, float]]:
        return [(run.epoch_end_step[e], v) for e, v in sorted(values.items())
                if e in run.epoch_end_step]  # fmt: skip

    return {
        "step": finite(list(run.current_loss)),
        "average": finite(sorted(run.avg_loss_step.items())),
        "epoch": finite(at_epoch_end(run.train_loss_epoch)),
        "validation": finite(at_epoch_end(run.val_loss_epoch)),
    }


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def _axes(
    sx: Callable[[float], float], sy: Callable[[float], float],
    xs: tuple[float, float], ys: tuple[float, float],
) -> list[str]:  # fmt: skip
    """Horizontal grid lines with the loss values, step ticks, the axis title."""
    out = []
    for y in _ticks(*ys):
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
                   f'stroke="#eee"/><text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" '
                   f'text-anchor="end" class="tick">{y:.3g}</text>')  # fmt: skip
    for x in _ticks(*xs):
        out.append(f'<text x="{sx(x):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                   f'class="tick">{x:.0f}</text>')  # fmt: skip
    middle = LEFT + (WIDTH - LEFT - RIGHT) / 2
    out.append(f'<text x="{middle}" y="{HEIGHT - 6}" text-anchor="middle" class="tick">step</text>')
    return out


def loss_svg(run: RunData, picked: Path | None) -> str | None:
    """The chart, or None when the run has no loss yet."""
    series = chart_series(run)
    points = [p for values in series.values() for p in values]
    if not points:
        return None
    marks = [(float(cp.step), cp.path == picked) for cp in run.checkpoints if cp.step is not None]
    xs = [x for x, _ in points] + [x for x, _ in marks]
    ys = [y for _, y in points]
    x0, x1 = min(0.0, *xs), max(xs) or 1.0
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / ((x1 - x0) or 1.0) * plot_w

    def sy(y: float) -> float:
        return TOP + (y1 - y) / (y1 - y0) * plot_h

    out = [
        f'<svg id="loss-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="loss by step">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" '
        'stroke="#ccc"/>',
    ]
    out += _axes(sx, sy, (x0, x1), (y0, y1))
    for x, chosen in marks:
        color, dash = ("#d62728", "") if chosen else ("#999", ' stroke-dasharray="3 3"')
        out.append(f'<line class="checkpoint" x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{TOP}" '
                   f'y2="{TOP + plot_h}" stroke="{color}"{dash}/>')  # fmt: skip
    for key, values in series.items():
        if not values:
            continue
        color, _label = SERIES[key]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        width = "0.8" if key == "step" else "1.8"
        out.append(f'<polyline class="series series-{key}" fill="none" stroke="{color}" '
                   f'stroke-width="{width}" points="{coords}"/>')  # fmt: skip
        if key in ("epoch", "validation"):
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{color}"/>'
                    for x, y in values]  # fmt: skip
    legend_y, legend_x = TOP + 14, WIDTH - RIGHT - 170  # top right: loss falls, so it is free
    for key, (color, label) in SERIES.items():
        if series[key]:
            out.append(f'<rect x="{legend_x}" y="{legend_y - 9}" width="14" height="4" '
                       f'fill="{color}"/><text x="{legend_x + 20}" y="{legend_y - 4}" '
                       f'class="legend">{escape(label)}</text>')  # fmt: skip
            legend_y += 16
    out.append("</svg>")
    return "\n".join(out)
