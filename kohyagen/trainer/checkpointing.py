"""Writing LoRA checkpoints and training states under kohya's names and rotation rules."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from kohyagen.trainer.saving import epoch_name, step_name, write_lora

if TYPE_CHECKING:
    from kohyagen.trainer.lora import LoRANetwork
    from kohyagen.trainer.output import Console


def output_name(args: SimpleNamespace, kind: str) -> str:
    """output_name, else kohya's fallback for each kind of save."""
    if args.output_name:
        return args.output_name
    # kohya's fallbacks when output_name is unset (train_util.py:5771-5783)
    return {"epoch": "epoch", "step": "at", "final": "last"}[kind]


def old_step(step: int, keep_steps: int, every: int) -> int:
    """The step-numbered save that falls out of the last keep_steps steps (kohya's rule)."""
    # train_util.py:5786-5805: the save that just left the window, floored to a save step
    old = step - keep_steps - 1
    return old - old % every


class Checkpointer:
    """Epoch, step and final saves (LoRA file, optional state folder), with rotation."""

    def __init__(
        self,
        accelerator: Any,
        console: Console,
        args: SimpleNamespace,
        *,
        out_dir: Path,
        metadata: dict[str, str],
        network: LoRANetwork,
        save_every: int | None,
    ) -> None:
        self.accelerator = accelerator
        self.console = console
        self.args = args
        self.out_dir = out_dir
        self.metadata = metadata
        self.network = network
        self.save_every = save_every
        self.ext = "." + (args.save_model_as or "safetensors")
        self.saved: list[Path] = []

    def save_model(self, filename: str, *, epoch: int, step: int) -> Path:
        path = self.out_dir / filename
        self.console.saving(path)
        if self.accelerator.is_main_process:
            # only rank 0 writes, as kohya's accelerator.is_main_process check does
            md = dict(self.metadata)
            if not self.args.no_metadata:
                # kohya stamps these per save (train_network.py:1296-1311); every ss_ value is a string
                md["ss_training_finished_at"] = str(time.time())
                md["ss_steps"] = str(step)
                md["ss_epoch"] = str(epoch)
            write_lora(
                path, self.network.kohya_state_dict(), md, save_precision=self.args.save_precision
            )
        self.saved.append(path)
        return path

    def save_state(self, dirname: str, *, epoch: int, step: int) -> None:
        state_dir = self.out_dir / dirname
        self.accelerator.save_state(str(state_dir))
        if self.accelerator.is_main_process:
            # kohya's resume reads current_step from this file (train_network.py:1231-1270)
            (state_dir / "train_state.json").write_text(
                json.dumps({"current_epoch": epoch, "current_step": step})
            )

    def remove_old(self, path: Path) -> None:
        if self.accelerator.is_main_process and path.exists():
            # the exact line kohya logs: report.logs parses it
            self.console.log(f"removing old checkpoint: {path}")
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def save_at_step(self, epoch: int, step: int) -> None:
        args = self.args
        name = output_name(args, "step")
        self.save_model(step_name(name, step, self.ext), epoch=epoch, step=step)
        every = int(args.save_every_n_steps)
        if args.save_last_n_steps:
            old = old_step(step, int(args.save_last_n_steps), every)
            if old > 0:
                self.remove_old(self.out_dir / step_name(name, old, self.ext))
        if args.save_state:
            self.console.log(f"saving state at step {step}")
            self.save_state(step_name(name, step, "-state"), epoch=epoch, step=step)
            # kohya keeps states for save_last_n_steps too when no separate count is given
            keep = args.save_last_n_steps_state or args.save_last_n_steps
            if keep:
                old = old_step(step, int(keep), every)
                if old > 0:
                    self.remove_old(self.out_dir / step_name(name, old, "-state"))

    def save_at_epoch(self, epoch_no: int, step: int) -> None:
        args = self.args
        name = output_name(args, "epoch")
        self.save_model(epoch_name(name, epoch_no, self.ext), epoch=epoch_no, step=step)
        # only called on a save_every multiple, so it is set (train.py checks it first)
        every = int(self.save_every or 0)
        if args.save_last_n_epochs:
            # epoch saves come every `every` epochs, so the one leaving the window is that far back
            old = epoch_no - every * int(args.save_last_n_epochs)
            if old > 0:
                self.remove_old(self.out_dir / epoch_name(name, old, self.ext))
        if args.save_state:
            self.console.log(f"saving state at epoch {epoch_no}")
            self.save_state(epoch_name(name, epoch_no, "-state"), epoch=epoch_no, step=step)
            keep = args.save_last_n_epochs_state or args.save_last_n_epochs
            if keep:
                old = epoch_no - every * int(keep)
                if old > 0:
                    self.remove_old(self.out_dir / epoch_name(name, old, "-state"))

    def save_final(self, num_epochs: int, step: int) -> Path:
        name = output_name(self.args, "final")
        # the final state is written before the final model, in kohya's order
        if self.args.save_state or self.args.save_state_on_train_end:
            self.console.log("saving last state.")
            self.save_state(f"{name}-state", epoch=num_epochs, step=step)
        return self.save_model(f"{name}{self.ext}", epoch=num_epochs, step=step)
