"""Saved checkpoints: find them, rank them, and pick the one to use, with the reason.

kohya names them `{name}-{epoch:06d}.ext` (every N epochs), `{name}-step{step:08d}.ext`
(every N steps) and `{name}.ext` for the final model; the last epoch is never saved under a
numbered name, so the final file is the last epoch. A `.safetensors` header also holds
ss_epoch and ss_steps, which win over what the name says.

Ranking: by validation loss where kohya logged it; otherwise from the epoch-average
training loss, read as the guide reads it — still falling: not converged, the latest is
best; rising after a minimum: overfitting, take the checkpoint at the turn; flat from the
start: the learning rate is probably too low (flagged).
"""

from __future__ import annotations

import json
import math
import re
import statistics
import struct
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from kohyagen.errors import KohyagenError, RunStateError, UsageError
from kohyagen.report.family import divergence_step
from kohyagen.report.run_data import Checkpoint, RunData

CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".pt")
BEST_SUFFIX = "-best"


@dataclass(frozen=True)
class Choice:
    path: Path
    best_path: Path | None
    epoch: int | None
    step: int | None
    reason: str
    ranking: list[dict]  # every checkpoint with its score, best first
    by: str  # "val" or "train"
    verdict: str  # "validation" | "falling" | "overfitting" | "leveled" | "flat" | "unknown"
    flags: list[str] = field(default_factory=list)  # e.g. "learning-rate-too-low"
    pruned: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["path"] = str(self.path)
        data["best_path"] = str(self.best_path) if self.best_path else None
        return data


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The __metadata__ of a .safetensors file (header only; {} when unreadable)."""
    try:
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            # a header that large is not a LoRA's: do not read a stray file into memory
            if size > 100_000_000:
                return {}
            header = json.loads(handle.read(size))
    except (OSError, ValueError, struct.error):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def checkpoint_pattern(output_name: str | None, *, best: bool = False) -> re.Pattern[str]:
    """kohya's checkpoint file names for output_name (groups epoch, step, ext).

    Without output_name kohya names each kind of save differently: epoch-000002,
    at-step00000500 and last (train_util's fallback names).
    """
    best_part = f"|{re.escape(BEST_SUFFIX)}" if best else ""
    if output_name:
        name = (
            re.escape(output_name) + rf"(?:-(?P<epoch>\d{{6}})|-step(?P<step>\d{{8}}){best_part})?"
        )
    else:
        best_name = f"|last{re.escape(BEST_SUFFIX)}" if best else ""
        name = rf"(?:epoch-(?P<epoch>\d{{6}})|at-step(?P<step>\d{{8}})|last{best_name})"
    return re.compile(name + r"(?P<ext>\.\w+)")


def list_checkpoints(
    output_dir: Path,
    output_name: str | None,
    *,
    epoch_end_step: dict[int, int] | None = None,
    total_epochs: int | None = None,
    total_steps: int | None = None,
) -> list[Checkpoint]:
    """Checkpoints of one output_name (None: kohya's unnamed files), the final one last."""
    if not output_dir.is_dir():
        return []
    pattern = checkpoint_pattern(output_name)
    epoch_end_step = epoch_end_step or {}
    found = []
    for path in output_dir.iterdir():
        match = pattern.fullmatch(path.name)
        if not match or match.group("ext") not in CHECKPOINT_EXTENSIONS or not path.is_file():
            continue
        meta = read_safetensors_metadata(path) if path.suffix == ".safetensors" else {}
        if match.group("epoch"):
            kind, epoch = "epoch", int(match.group("epoch"))
            step = epoch_end_step.get(epoch)
        elif match.group("step"):
            kind, step, epoch = "step", int(match.group("step")), None
            # a step save belongs to the epoch whose last step is at or after it
            epoch = next((e for e, s in sorted(epoch_end_step.items()) if step <= s), None)
        else:
            # kohya never saves the last epoch under a number (train_network.py:1694): the final
            # file is that epoch
            kind, epoch, step = "final", total_epochs, total_steps
        # the file's own metadata beats what its name and the log suggest
        epoch = _int(meta.get("ss_epoch")) or epoch
        step = _int(meta.get("ss_steps")) or step
        found.append(Checkpoint(path, kind, epoch, step, path.stat().st_size))
    # the final file is always last, whatever its step
    order = {"epoch": 0, "step": 0, "final": 1}
    return sorted(found, key=lambda c: (order[c.kind], c.step or 0, c.epoch or 0, c.path.name))


# --- ranking --------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def epoch_noise(current: list[tuple[int, float]], epoch_end_step: dict[int, int]) -> float | None:
    """Standard error of one epoch's mean loss, from the per-step losses (median over epochs)."""
    if not current or not epoch_end_step:
        return None
    bounds = sorted(epoch_end_step.items())
    errors = []
    start = 0
    for _epoch, end in bounds:
        values = [v for s, v in current if start < s <= end and math.isfinite(v)]
        start = end
        if len(values) >= 2:
            # the standard error of one epoch's mean loss: how much two epoch means differ by chance
            errors.append(statistics.stdev(values) / math.sqrt(len(values)))
    return statistics.median(errors) if errors else None


def read_trend(
    epoch_loss: dict[int, float], *, noise: float | None = None
) -> tuple[str, int | None, float]:
    """(verdict, turn epoch, tolerance) for epoch-average training losses.

    A change counts only beyond the tolerance: 1% of the loss, or twice the noise of a
    difference of two epoch means when per-step losses tell how noisy they are.
    """
    series = [(e, v) for e, v in sorted(epoch_loss.items()) if math.isfinite(v)]
    if len(series) < 2:
        return "unknown", None, 0.0
    values = [v for _e, v in series]
    low = min(values)
    # the difference of two means has sqrt(2) times one mean's error; two of those is noise
    tolerance = max(0.01 * abs(low), 2 * math.sqrt(2) * noise if noise else 0.0)
    turn_index = values.index(low)
    first, last = values[0], values[-1]
    if first - low <= tolerance and len(values) >= 3:  # never really dropped
        return "flat", None, tolerance
    # the guide's reading: a loss that rises again after its minimum is overfitting
    if turn_index < len(values) - 1 and last - low > tolerance:
        return "overfitting", series[turn_index][0], tolerance
    if turn_index == len(values) - 1 or values[-2] - last > tolerance:
        return "falling", None, tolerance
    return "leveled", None, tolerance


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _train_value(cp: Checkpoint, run: RunData) -> float | None:
    if cp.kind in ("epoch", "final") and cp.epoch in run.train_loss_epoch:
        return _finite(run.train_loss_epoch[cp.epoch])
    if cp.step is not None and run.avg_loss_step:
        # the running average at the last logged step before the save
        earlier = [s for s in run.avg_loss_step if s <= cp.step]
        if earlier:
            return _finite(run.avg_loss_step[max(earlier)])
    return None


def _val_value(cp: Checkpoint, run: RunData) -> float | None:
    if cp.kind in ("epoch", "final") and cp.epoch in run.val_loss_epoch:
        return _finite(run.val_loss_epoch[cp.epoch])
    if cp.step is not None and cp.step in run.val_loss_step:
        return _finite(run.val_loss_step[cp.step])
    return None


def _label(cp: Checkpoint) -> str:
    if cp.epoch is not None and cp.kind != "step":
        return f"epoch {cp.epoch}"
    return f"step {cp.step}"


def _no_checkpoint_hint(training: dict[str, Any]) -> str:
    every_epochs = training.get("save_every_n_epochs")
    every_steps = training.get("save_every_n_steps")
    if every_epochs or every_steps:
        when = f"epoch {every_epochs}" if every_epochs else f"step {every_steps}"
        return f"the first one is saved after {when}; run this again then"
    return "set save_every_n_epochs so that every epoch leaves a file to choose from"


def rank(run: RunData, *, by: str = "auto") -> Choice:
    """Choose a checkpoint of a loaded run (kohyagen.report.run_folder.load_run) without writing.

    Where the gradient norm FLUX logs (norm/avg_grad_norm) turned NaN or infinite, training
    diverged: checkpoints from that step on are left out while earlier ones exist."""
    bad = divergence_step(run.scalars)
    kept = [cp for cp in run.checkpoints if cp.step is not None and bad is not None and cp.step < bad]
    if bad is None or not kept:
        return _rank(run, by=by)
    choice = _rank(replace(run, checkpoints=kept), by=by)
    note = (
        f"; checkpoints from step {bad} on were left out: the gradient norm "
        "(norm/avg_grad_norm) was not finite there"
    )
    return replace(
        choice, reason=choice.reason + note, flags=[*choice.flags, "gradient-norm-not-finite"]
    )


def _rank(run: RunData, *, by: str = "auto") -> Choice:
    if by not in ("auto", "val", "train"):
        raise UsageError(f"--by must be auto, val or train, got {by!r}")
    checkpoints = run.checkpoints
    if not checkpoints:
        raise RunStateError(
            "no checkpoints saved in this run yet",
            path=run.output_dir or run.run_dir,
            hint=_no_checkpoint_hint(run.training),
        )
    val = [(cp, _val_value(cp, run)) for cp in checkpoints]
    has_val = any(v is not None and math.isfinite(v) for _cp, v in val)
    if by == "val" and not has_val:
        raise KohyagenError(
            "no validation loss was logged for the saved checkpoints",
            path=run.run_dir,
            hint="set validation_split (and validation_seed) in the dataset config, or use --by train",
        )
    if by == "val" or (by == "auto" and has_val):
        return _by_validation(val)
    return _by_training_loss(run)


def _by_validation(val: list[tuple[Checkpoint, float | None]]) -> Choice:
    """The checkpoint with the lowest validation loss (the earlier one on a tie)."""
    scored = [(v, cp) for cp, v in val if v is not None and math.isfinite(v)]
    best_value, best = min(scored, key=lambda item: (item[0], item[1].step or 0))
    ranking = [
        {**cp.to_dict(), "validation_loss": v}
        for v, cp in sorted(scored, key=lambda item: (item[0], item[1].step or 0))
    ]
    listing = ", ".join(
        f"{_label(cp)}: {_fmt(v)}" for v, cp in sorted(scored, key=lambda i: i[1].step or 0)
    )
    reason = f"lowest validation loss ({_fmt(best_value)}) at {_label(best)} [{listing}]"
    return Choice(best.path, None, best.epoch, best.step, reason, ranking, "val", "validation")


def _by_training_loss(run: RunData) -> Choice:
    """By the epoch-average training loss's trend: the turn when it overfits, else the latest."""
    checkpoints = run.checkpoints
    train = [(cp, _train_value(cp, run)) for cp in checkpoints]
    ranking = [{**cp.to_dict(), "train_loss": v} for cp, v in train]
    latest = checkpoints[-1]
    if not any(v is not None for _cp, v in train):
        reason = "no training loss was logged; taking the latest checkpoint"
        return Choice(
            latest.path, None, latest.epoch, latest.step, reason, ranking, "train", "unknown"
        )
    verdict, turn, tolerance = read_trend(run.train_loss_epoch, noise=run.noise)
    series = ", ".join(f"{e}: {_fmt(v)}" for e, v in sorted(run.train_loss_epoch.items()))
    flags: list[str] = []
    chosen = latest
    if verdict == "overfitting":
        scored = [(v, cp) for cp, v in train if v is not None]
        # the saved checkpoint closest to the turn: lowest loss, then nearest epoch
        chosen = min(
            scored, key=lambda item: (round(item[0], 6), abs((item[1].epoch or 0) - (turn or 0)))
        )[1]
        assert turn is not None  # read_trend always names the turn of an overfitting curve
        low = run.train_loss_epoch[turn]
        last_epoch, last_value = max(run.train_loss_epoch.items())
        reason = (
            f"training loss fell to {_fmt(low)} at epoch {turn} and rose to {_fmt(last_value)} "
            f"by epoch {last_epoch}: overfitting, so the checkpoint at the turn ({_label(chosen)}) "
            f"[epoch-average loss {series}]"
        )
    elif verdict == "falling":
        reason = (
            f"training loss is still falling [epoch-average loss {series}]: not converged, the "
            f"latest ({_label(latest)}) is best; more epochs may help"
        )
    elif verdict == "flat":
        flags.append("learning-rate-too-low")
        reason = (
            f"training loss stayed flat from the start (within {_fmt(tolerance)}) "
            f"[epoch-average loss {series}]: the learning rate is probably too low; "
            f"taking the latest ({_label(latest)})"
        )
    elif verdict == "leveled":
        reason = (
            f"training loss has leveled off (last epochs within {_fmt(tolerance)} of the "
            f"minimum) [epoch-average loss {series}]: taking the latest ({_label(latest)})"
        )
    else:
        reason = f"only one epoch of loss was logged; taking the latest ({_label(latest)})"
    return Choice(
        chosen.path, None, chosen.epoch, chosen.step, reason, ranking, "train", verdict, flags
    )
