"""The training loop: kohya's LoRA training on diffusers models, through accelerate.

`LoRARecipe` is one run: `setup()` builds it in named phases (trainer/setup.py), `train()`
runs the epochs, each a sequence of small steps, and saves the final LoRA. kohya keeps all of
this in one long train(); the order of operations here is kept the same, since the RNG
draws, the printed lines and the files written all depend on it.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kohyagen.errors import ConfigError
from kohyagen.trainer.config import TrainerConfig
from kohyagen.trainer.output import Console, LossRecorder, lr_logs, step_bar
from kohyagen.trainer.setup import RunSetup


class LoRARecipe(RunSetup):
    """A LoRA training run as kohya's train_network.py / sdxl_train_network.py performs it."""

    def setup(self) -> None:
        """Every setup phase, a resumed state, the run summary, metadata, trackers, checkpointer."""
        super().setup()
        self.setup_resume()
        self.setup_metadata_and_trackers()
        self.setup_saving()

    def setup_resume(self) -> None:
        """Load a state folder written by save_state; note where its step and epoch stood."""
        self.initial_step = 0
        self.first_epoch = 0
        if not self.resume:
            return
        state_dir = Path(self.resume)
        if not (state_dir / "train_state.json").is_file():
            raise ConfigError(
                "not a training state folder (no train_state.json)",
                path=state_dir,
                hint="pass a <name>-state or <name>-NNNNNN-state folder written with save_state",
            )
        self.console.log(f"resume training from local state: {state_dir}")
        self.accelerator.load_state(str(state_dir), strict=False)
        state = json.loads((state_dir / "train_state.json").read_text())
        self.initial_step = int(state.get("current_step", 0))
        self.first_epoch = int(state.get("current_epoch", 0))

    def setup_metadata_and_trackers(self) -> None:
        """Print kohya's run summary, build the ss_* metadata and open TensorBoard."""
        from kohyagen.trainer.dataset_metadata import dataset_metadata
        from kohyagen.trainer.saving import training_metadata

        args, train_ds = self.args, self.train_ds
        self.console.summary(
            device=str(self.accelerator.device),
            epochs_override=self.epochs_override,
            train_images=train_ds.train_count,
            validation_images=len(self.val_ds.items),
            reg_images=train_ds.reg_count,
            batches_per_epoch=len(self.loader),
            epochs=self.num_epochs,
            batch_size=", ".join(str(sp.batch_size) for sp in self.specs),
            grad_accum=self.grad_accum,
            total_steps=self.max_train_steps,
        )
        # kohya's ss_session_id: a random 32-bit number, drawn after the seed is set.
        session_id = random.randint(0, 2**32)
        self.metadata = training_metadata(
            args,
            sdxl=self.cfg.is_sdxl,
            v_param=self.components.v_parameterization,
            session_id=session_id,
            started_at=time.time(),
            num_train_images=train_ds.train_count,
            num_validation_images=len(self.val_ds.items),
            num_reg_images=train_ds.reg_count,
            num_batches_per_epoch=len(self.loader),
            num_epochs=self.num_epochs,
            max_train_steps=self.max_train_steps,
            optimizer_name=self.optimizer_name,
            dataset_info=dataset_metadata(self.cfg, train_ds),
            resolution=self.specs[0].resolution,
        )
        if self.log_dir is not None:
            self.accelerator.init_trackers(args.log_tracker_name or "network_train")

    def setup_saving(self) -> None:
        """The checkpointer, the loss window and the step counter where the run starts."""
        from kohyagen.trainer.checkpointing import Checkpointer

        self.out_dir = Path(self.args.output_dir)
        unwrapped = self.accelerator.unwrap_model(self.model)
        self.ckpt = Checkpointer(
            self.accelerator,
            self.console,
            self.args,
            out_dir=self.out_dir,
            metadata=self.metadata,
            network=unwrapped.network,
            save_every=self.save_every,
        )
        self.recorder = LossRecorder()
        self.global_step = self.initial_step

    def train(self) -> dict[str, object]:
        """Every epoch, then the final save; return a summary of the run."""
        self.bar = step_bar(
            self.max_train_steps, self.initial_step, self.accelerator.is_local_main_process
        )
        if self.args.sample_at_first:
            self.sample(None, 0)
        loop_started = time.perf_counter()
        # kohya resumes mid-epoch by skipping the batches the saved step already consumed.
        first = self.first_epoch
        self.skip_in_first = self.initial_step - first * self.steps_per_epoch if self.resume else 0
        for epoch in range(first, self.num_epochs):
            if self.global_step >= self.max_train_steps:
                break
            self.train_epoch(epoch)
            self.end_epoch(epoch)
        self.bar.close()
        return self.finish(time.perf_counter() - loop_started)

    def train_epoch(self, epoch: int) -> None:
        """One pass over the loader, stopping at max_train_steps."""
        self.console.epoch_header(epoch + 1, self.num_epochs)
        self.console.log(f"epoch is incremented. current_epoch: {epoch}, epoch: {epoch + 1}")
        # Not set_epoch: accelerate's loader would call that with its own epoch count.
        self.train_set.start_epoch(epoch)
        self.network.train()
        for step, batch in enumerate(self.loader):
            if epoch == self.first_epoch and step < self.skip_in_first * self.grad_accum:
                continue
            loss = self.train_step(batch)
            # kohya applies it after every batch, also between accumulated steps.
            args = self.args
            norms = (
                self.network.apply_max_norm(args.scale_weight_norms)
                if args.scale_weight_norms
                else None
            )
            if self.accelerator.sync_gradients:
                self.after_optimizer_step(epoch)
            self.log_step(epoch, step, float(loss.detach()), norms)
            if self.global_step >= self.max_train_steps:
                break

    def train_step(self, batch: Any) -> Any:
        """Forward, backward, clip, optimizer and scheduler steps for one batch; its loss."""
        accelerator, args = self.accelerator, self.args
        with accelerator.accumulate(self.model):
            loss = self.model(batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients and args.max_grad_norm:
                accelerator.clip_grad_norm_(
                    [p for g in self.groups for p in g["params"]], float(args.max_grad_norm)
                )
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss

    def after_optimizer_step(self, epoch: int) -> None:
        """Count the step; save and draw samples at the step intervals kohya uses."""
        args = self.args
        self.bar.update(1)
        self.global_step += 1
        step = self.global_step
        if args.save_every_n_steps and step % int(args.save_every_n_steps) == 0:
            self.accelerator.wait_for_everyone()
            self.ckpt.save_at_step(epoch, step)
        if args.sample_every_n_steps and step % int(args.sample_every_n_steps) == 0:
            self.sample(None, step)

    def log_step(self, epoch: int, step: int, current: float, norms: Any) -> None:
        """The loss window, the bar's postfix, kohya's TensorBoard tags and step validation."""
        # This run's first epoch fills the window, also after a resume.
        self.recorder.add(epoch=epoch - self.first_epoch, step=step, loss=current)
        avr = self.recorder.moving_average
        self.bar.set_postfix({**(norms.postfix() if norms else {}), "avr_loss": avr})
        logs = {"loss/current": current, "loss/average": avr, **(norms.logs() if norms else {})}
        logs.update(lr_logs(self.optimizer, self.group_desc))
        if self.log_dir is not None:
            self.accelerator.log(logs, step=self.global_step)
        every = self.args.validate_every_n_steps
        if every and self.accelerator.sync_gradients and self.global_step % int(every) == 0:
            val = self.validate("validation steps", "val_avg_loss")
            if val is not None and self.log_dir is not None:
                self.accelerator.log(
                    {
                        "loss/validation/step_average": val,
                        "loss/validation/step_divergence": val - avr,
                    },
                    step=self.global_step,
                )

    def end_epoch(self, epoch: int) -> None:
        """The epoch's average loss, validation, the epoch save and samples."""
        args, accelerator = self.args, self.accelerator
        if self.log_dir is not None:
            accelerator.log({"loss/epoch_average": self.recorder.moving_average}, step=epoch + 1)
        every_val = int(args.validate_every_n_epochs or 1)
        if (epoch + 1) % every_val == 0:
            val = self.validate("epoch validation steps", "val_epoch_avg_loss")
            if val is not None and self.log_dir is not None:
                accelerator.log(
                    {
                        "loss/validation/epoch_average": val,
                        "loss/validation/epoch_divergence": val - self.recorder.moving_average,
                    },
                    step=epoch + 1,
                )
        accelerator.wait_for_everyone()
        # kohya skips the epoch save of the last epoch: the final save writes that one.
        save_every = self.save_every
        if save_every and (epoch + 1) % int(save_every) == 0 and epoch + 1 < self.num_epochs:
            self.ckpt.save_at_epoch(epoch + 1, self.global_step)
        if args.sample_every_n_epochs and (epoch + 1) % int(args.sample_every_n_epochs) == 0:
            self.sample(epoch + 1, self.global_step)

    def validate(self, desc: str, postfix_key: str) -> float | None:
        """The validation loss, with the network's dropout off while measuring."""
        from kohyagen.trainer.validation import validation_loss, validation_timesteps

        self.network.eval()  # no dropout while measuring
        try:
            return validation_loss(
                self.model,
                self.val_set,
                timesteps=validation_timesteps(self.args.min_timestep, self.args.max_timestep),
                seed=int(self.args.validation_seed or self.seed),
                max_batches=self.args.max_validation_steps,
                device=self.accelerator.device,
                desc=desc,
                postfix_key=postfix_key,
                show=self.accelerator.is_local_main_process,
            )
        finally:
            self.network.train()

    def sample(self, epoch: int | None, step: int) -> None:
        """Draw the sample prompts' images (main process only, as kohya does)."""
        if not self.args.sample_prompts or not self.accelerator.is_main_process:
            return
        from kohyagen.trainer.sample import sample_images

        self.console.log(f"generating sample images at step / サンプル画像生成 ステップ: {step}")
        sample_images(
            self.components,
            self.args,
            self.out_dir / "sample",
            epoch=epoch,
            step=step,
            device=self.accelerator.device,
            v_prediction=self.components.v_parameterization,
        )

    def finish(self, train_seconds: float) -> dict[str, object]:
        """Save the final LoRA, close the trackers, unhook the network; the run's summary."""
        self.accelerator.wait_for_everyone()
        final = self.ckpt.save_final(self.num_epochs, self.global_step)
        self.console.log("model saved.")
        self.accelerator.end_training()
        self.network.restore()
        self.console.close()
        return {
            "final": final,
            "checkpoints": self.ckpt.saved,
            "steps": self.global_step - self.initial_step,
            "epochs": self.num_epochs,
            "train_seconds": train_seconds,
        }


def run(
    cfg: TrainerConfig,
    *,
    resume: str | None = None,
    console_factory: Callable[..., Console] = Console,
) -> dict[str, object]:
    """Train a LoRA as kohya's train_network.py / sdxl_train_network.py would; return a summary."""
    recipe = LoRARecipe(cfg, resume=resume, console_factory=console_factory)
    recipe.setup()
    return recipe.train()
