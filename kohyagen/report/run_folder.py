"""A run folder read into RunData: train.log, TensorBoard events, checkpoints and samples.

TensorBoard events are exact (float32) and preferred; train.log is the fallback and
always works, also on a run still in progress. Only the last attempt counts: train.json
records where each attempt's output starts in train.log and when it started, so an
earlier attempt that ran out of memory does not leak into the curves.

Kept apart from summary.py, which turns a loaded run into summary.json and writes the
report files: pick and preview load a run without writing anything.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kohyagen.config.schema import flatten_training_config, load_toml, script_for_config
from kohyagen.errors import RunStateError
from kohyagen.launch.resume import first_start, read_state, sessions_before
from kohyagen.report.checkpoints import epoch_noise, list_checkpoints
from kohyagen.report.log_summary import parse_log
from kohyagen.report.origin import follow_move, moved_path
from kohyagen.report.run_data import RunData
from kohyagen.report.tensorboard import find_event_files, read_scalars, scalars_by_tag

if TYPE_CHECKING:
    from kohyagen.report.log_summary import LogSummary
    from kohyagen.report.run_data import Checkpoint

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# kohya's sample names: NAME_e000002_00_<time>.png, or NAME_000500_00_<time>.png by step
_SAMPLE_EPOCH = re.compile(r"_e(\d{6})_(\d{2})_")
_SAMPLE_STEP = re.compile(r"_(\d{6})_(\d{2})_")


def _last_attempt(state: dict | None) -> dict | None:
    attempts = (state or {}).get("attempts") or []
    return attempts[-1] if attempts else None


def _read_log(run_dir: Path, state: dict | None) -> str | None:
    path = run_dir / "train.log"
    if not path.is_file():
        return None
    data = path.read_bytes()
    last = _last_attempt(state)
    if last and isinstance(last.get("log_start"), int):
        # only the last attempt's bytes: an out-of-memory attempt before it must not add points
        data = data[last["log_start"] :]
    return data.decode("utf-8", "replace")


def _resolve(value: Any, base: Path) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def load_run(run_dir: str | Path) -> RunData:
    """Everything known about a run folder (finished, failed or still running)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunStateError(
            "run folder not found", path=run_dir, hint="pass the folder `kohyagen train` made"
        )
    # damaged, of another shape ([], "x") or a FIFO: as if there were none
    state = read_state(run_dir)
    training: dict[str, Any] = {}
    script = "train_network"
    config = run_dir / "training_config.toml"
    if config.is_file():
        doc = load_toml(config)
        training, _ = flatten_training_config(doc.data)
        script = script_for_config(doc.text, training)
    # a copied or moved run folder reads its own output and logs, not the original's
    state, training, moved_from = follow_move(run_dir, state, training)
    text = _read_log(run_dir, state)
    if text is None and not training:
        raise RunStateError(
            "no train.log and no training_config.toml here", path=run_dir,
            hint="pass a run folder made by `kohyagen train`",
        )  # fmt: skip
    log = parse_log(text) if text is not None else None

    output_dir, output_name, unnamed = _output_names(training, log, run_dir, moved_from)
    scalars, event_files = _run_scalars(training, state, run_dir)
    epoch_avg = dict(scalars.get("loss/epoch_average", []))
    train_loss_epoch = _merge(epoch_avg, log.epoch_losses() if log else {})
    epoch_end_step = _epoch_end_steps(log, scalars, epoch_avg)
    val_loss_epoch = _merge(
        dict(scalars.get("loss/validation/epoch_average", [])),
        dict(log.val_loss_by_epoch) if log else {},
    )
    val_loss_step = _merge(
        dict(scalars.get("loss/validation/step_average", [])),
        dict(log.val_loss_by_step) if log else {},
    )
    avg_loss_step = _merge(
        dict(scalars.get("loss/average", [])), dict(log.loss_by_step) if log else {}
    )
    current = scalars.get("loss/current", [])

    checkpoints = _run_checkpoints(
        output_dir, None if unnamed else output_name, log, training, epoch_end_step, state,
        moved_from,
    )
    run = RunData(
        run_dir, state, training, output_dir, output_name, log, scalars, event_files,
        checkpoints, epoch_end_step, train_loss_epoch, val_loss_epoch, val_loss_step,
        avg_loss_step, current, epoch_noise(current, epoch_end_step),
    )  # fmt: skip
    run.samples = _samples(output_dir, output_name) if output_dir else {}
    run.script = script
    run.moved_from = moved_from
    return run


def _output_names(
    training: dict[str, Any], log: LogSummary | None, run_dir: Path, moved_from: str | None
) -> tuple[Path | None, str, bool]:
    """output_dir, output_name, and whether kohya named the files itself (no output_name)."""
    output_name = str(training.get("output_name") or "")
    output_dir = _resolve(training.get("output_dir"), run_dir)
    # the log names the files when the config does not (a config copied away)
    if log and log.checkpoints:
        first = Path(log.checkpoints[0][0])
        if moved_from is not None:
            first = Path(moved_path(str(first), moved_from, str(run_dir.resolve())))
        output_dir = output_dir or first.parent
        if not output_name:
            output_name = re.sub(r"(-\d{6}|-step\d{8})$", "", first.stem)
    # kohya's names when output_name is unset: epoch-000001, at-step00000010, last
    unnamed = output_name in ("", "epoch", "at", "last") and not training.get("output_name")
    output_name = output_name if not unnamed else "last"
    return output_dir, output_name, unnamed


def _run_scalars(
    training: dict[str, Any], state: dict[str, Any] | None, run_dir: Path
) -> tuple[dict[str, list[tuple[int, float]]], list[Path]]:
    """This attempt's TensorBoard scalars by tag, and the event files they came from."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    event_files: list[Path] = []
    logging_dir = _resolve(training.get("logging_dir"), run_dir)
    if logging_dir is not None:
        last = _last_attempt(state) or {}
        earlier = sessions_before(state)
        if isinstance(last.get("event_files"), list):
            # kohyagen recorded which files this attempt wrote: exact, even within a second;
            # a resumed training adds the files of the sessions before the resume
            recorded = [p for s in earlier for p in s.get("event_files") or []]
            recorded += last["event_files"]
            event_files = [Path(p) for p in recorded if isinstance(p, str) and Path(p).is_file()]
        elif earlier:
            event_files = find_event_files(logging_dir, newer_than=first_start(state))
        else:
            event_files = find_event_files(logging_dir, newer_than=last.get("started_at"))
            prefix = str(training.get("log_prefix") or "")
            if prefix:
                event_files = [
                    p for p in event_files if any(q.name.startswith(prefix) for q in p.parents)
                ]
            if event_files:
                # One attempt writes one timestamped folder; keep the newest one's files.
                newest = event_files[-1].parent
                event_files = [p for p in event_files if p.parent == newest]
        events = []
        for path in event_files:
            events += read_scalars(path)
        scalars = scalars_by_tag(events)
    return scalars, event_files


def _epoch_end_steps(
    log: LogSummary | None, scalars: dict[str, list[tuple[int, float]]], epoch_avg: dict[int, float]
) -> dict[int, int]:
    """The global step at each epoch's end: from the log, else spread over the events' steps."""
    epoch_end_step = dict(log.epoch_end_step) if log else {}
    # steps before the first epoch header (epoch 0) end no epoch
    epoch_end_step.pop(0, None)
    if not epoch_end_step and epoch_avg and log is None:
        total = max_step(scalars)
        epochs = max(epoch_avg)
        if total and epochs:
            # no log: spread the steps evenly over the epochs, close enough for the plot
            epoch_end_step = {e: round(total * e / epochs) for e in epoch_avg}
    return epoch_end_step


def _run_checkpoints(
    output_dir: Path | None,
    name: str | None,
    log: LogSummary | None,
    training: dict[str, Any],
    epoch_end_step: dict[int, int],
    state: dict[str, Any] | None,
    moved_from: str | None,
) -> list[Checkpoint]:
    """This run's checkpoints: files of the name written while it ran."""
    total_epochs = planned_epochs(log, training)
    total_steps = log.total_steps if log else None
    # The final file is the last epoch: the epoch the log had reached, else the planned total.
    checkpoints = (
        list_checkpoints(
            output_dir,
            name,
            epoch_end_step=epoch_end_step,
            total_epochs=(log.epoch or None) if log else total_epochs,
            total_steps=(log.step or None) if log else total_steps,
        )
        if output_dir is not None
        else []
    )
    first = first_start(state)
    if moved_from is not None:
        first = None  # a copy's files carry the copy's times, and its output is its own
    if isinstance(first, (int, float)):
        # files of the same name left by an earlier run are not this run's checkpoints
        checkpoints = [c for c in checkpoints if c.path.stat().st_mtime >= first - 1]
    ended = (state or {}).get("ended_at")
    if (
        isinstance(ended, (int, float))
        and (state or {}).get("status") != "running"
        and moved_from is None
    ):
        # nor are files a later run with the same output_name wrote after this one ended
        checkpoints = [c for c in checkpoints if c.path.stat().st_mtime <= ended + 5]
    return checkpoints


def _merge(exact: dict[int, float], printed: dict[int, float]) -> dict[int, float]:
    """TensorBoard's exact values, plus what the log printed beyond the last event
    (events are written after the bar is drawn, so a stopped run's log is ahead)."""
    if not exact:
        return dict(printed)
    last = max(exact)
    merged = dict(exact)
    merged.update({k: v for k, v in printed.items() if k > last})
    return dict(sorted(merged.items()))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def planned_epochs(log: LogSummary | None, training: dict[str, Any]) -> int | None:
    """The run's epoch total: what the log printed, else the config's max_train_epochs."""
    return (log.total_epochs if log else None) or _int(training.get("max_train_epochs"))


def max_step(scalars: dict[str, list[tuple[int, float]]]) -> int | None:
    """The last step the TensorBoard loss reached (a run without a log)."""
    points = scalars.get("loss/current") or scalars.get("loss/average") or []
    return max((s for s, _v in points), default=None)


def _samples(output_dir: Path, output_name: str) -> dict[str, list[str]]:
    """kohya's sample images (output_dir/sample/<name>_e000001_00_<time>.png), by epoch."""
    folder = output_dir / "sample"
    if not folder.is_dir():
        return {}
    by_key: dict[str, list[str]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if match := _SAMPLE_EPOCH.search(path.name):
            key = f"epoch {int(match.group(1))}"
        elif match := _SAMPLE_STEP.search(path.name):
            key = f"step {int(match.group(1))}"
        else:
            key = "other"
        by_key.setdefault(key, []).append(str(path))
    return by_key
