"""What the trainer prints and logs, in kohya's formats.

stdout carries the run summary, epoch headers and "saving checkpoint" lines;
stderr carries log lines ("<date> INFO     message") and the tqdm `steps` bar;
TensorBoard tags are kohya's (loss/current, loss/average, lr/<group>, ...).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from tqdm.auto import tqdm

# logging's numeric levels, so --console_log_level filters as kohya's handler does
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class Console:
    """kohya's stdout lines (accelerator.print) and stderr log lines; main process only.

    As kohya's console_log_* options: level drops less severe log lines; log_file sends
    them, message only, to that file (written afresh) instead of stderr; simple prints
    the bare message on stdout instead of the dated stderr line.
    """

    def __init__(
        self,
        is_main: bool = True,
        *,
        level: str | None = None,
        log_file: str | None = None,
        simple: bool = False,
    ):
        self.is_main = is_main
        # kohya's default level is INFO (library/utils.py setup_logging)
        self.min_level = LEVELS.get((level or "INFO").upper(), 20)
        self.simple = simple
        self._file = None
        # mode "w" as kohya's console_log_file: a rerun does not append to the old run's log
        if log_file and is_main:
            self._file = open(log_file, "w", encoding="utf-8")  # noqa: SIM115 (lives with the run)

    def out(self, text: str = "") -> None:
        # accelerator.print: only the main process prints, so N GPUs do not print N times
        if self.is_main:
            print(text, flush=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def log(self, message: str, level: str = "INFO") -> None:
        if not self.is_main or LEVELS.get(level, 20) < self.min_level:
            return
        if self._file is not None:
            self._file.write(message + "\n")
            self._file.flush()
        elif self.simple:
            # --console_log_simple: a bare %(message)s handler, on stdout, not stderr
            print(message, flush=True)
        else:
            # kohya's Rich handler writes "<date> LEVEL message  file:line" to stderr; the
            # file:line column would name kohyagen's files, so it is left out
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            sys.stderr.write(f"{stamp} {level:<8} {message}\n")
            sys.stderr.flush()

    def summary(
        self,
        *,
        device: str,
        epochs_override: tuple[int, int] | None,
        train_images: int,
        validation_images: int,
        reg_images: int,
        batches_per_epoch: int,
        epochs: int,
        batch_size: int | str,
        grad_accum: int,
        total_steps: int,
    ) -> None:
        # the exact lines of train_network.py:987-1000, Japanese included: report.logs and
        # users' own scripts parse them, so the builtin trainer's log reads as kohya's
        self.out(f"accelerator device: {device}")
        self.out("import network module: networks.lora")
        self.out("prepare optimizer, data loader etc.")
        # printed only when --max_train_epochs replaced max_train_steps
        if epochs_override is not None:
            n, steps = epochs_override
            self.out(
                f"override steps. steps for {n} epochs is / 指定エポックまでのステップ数: {steps}"
            )
        self.out("running training / 学習開始")
        self.out(f"  num train images * repeats / 学習画像の数×繰り返し回数: {train_images}")
        # kohya reuses the train line's Japanese text for the validation count
        self.out(
            f"  num validation images * repeats / 学習画像の数×繰り返し回数: {validation_images}"
        )
        self.out(f"  num reg images / 正則化画像の数: {reg_images}")
        self.out(f"  num batches per epoch / 1epochのバッチ数: {batches_per_epoch}")
        self.out(f"  num epochs / epoch数: {epochs}")
        self.out(f"  batch size per device / バッチサイズ: {batch_size}")
        self.out(f"  gradient accumulation steps / 勾配を合計するステップ数 = {grad_accum}")
        self.out(f"  total optimization steps / 学習ステップ数: {total_steps}")

    def epoch_header(self, epoch: int, total: int) -> None:
        # a blank line before and after (train_network.py:1402); `^epoch (\d+)/(\d+)$` finds it
        self.out(f"\nepoch {epoch}/{total}\n")

    def saving(self, path: str | Path) -> None:
        # train_network.py:1300 prints an empty line first
        self.out(f"\nsaving checkpoint: {path}")


class LossRecorder:
    """kohya's avr_loss: the mean over epoch 1, then a window of one epoch's batches."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.total = 0.0

    def add(self, *, epoch: int, step: int, loss: float) -> None:
        if epoch == 0:
            self.losses.append(loss)
        else:
            # later epochs replace the loss at the same batch index (train_util.py:6668-6688);
            # an epoch with more batches than the first grows the window with zeros, as kohya's
            while len(self.losses) <= step:
                self.losses.append(0.0)
            self.total -= self.losses[step]
            self.losses[step] = loss
        self.total += loss

    @property
    def moving_average(self) -> float:
        return self.total / max(1, len(self.losses))


def step_bar(total: int, initial: int, enabled: bool) -> tqdm:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        # smoothing=0: the rate is the run's average, as kohya's bar (train_network.py:1357)
        smoothing=0,
        disable=not enabled,
        desc="steps",
        # every kohya bar goes to stderr with \r updates; stdout stays line-by-line
        file=sys.stderr,
    )


def lr_logs(optimizer: torch.optim.Optimizer, groups_desc: list[str]) -> dict[str, float]:
    """lr/<desc> for each group, plus kohya's trailing lr/group<last> duplicate."""
    logs: dict[str, float] = {}
    lrs = [g["lr"] for g in optimizer.param_groups]
    for i, lr in enumerate(lrs):
        desc = groups_desc[i] if i < len(groups_desc) else f"group{i}"
        logs[f"lr/{desc}"] = float(lr)
        # the adaptive optimizers also log their effective step, d * lr, as kohya does
        if optimizer.__class__.__name__.lower().startswith(("prodigy", "dadapt")):
            group = optimizer.param_groups[i]
            logs[f"lr/d*lr/{desc}"] = float(group.get("d", 1.0) * group["lr"])
    # kohya's `for ... else:` (train_network.py:89-127) always runs its else branch, so the
    # last group is logged twice; TensorBoard readers of kohya runs expect the extra tag
    if lrs:
        logs[f"lr/group{len(lrs) - 1}"] = float(lrs[-1])
    return logs
