"""The training run's setup, as named phases called in kohya's order.

Each phase sets the attributes the next one reads. The order is not free: the seed is
set before the datasets draw their validation split and before the network's weights
are initialised, and the accelerator wraps the model only once the optimizer exists,
so the phases run exactly in the sequence of kohya's train_network.py `train()`.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from kohyagen.errors import ConfigError, require
from kohyagen.trainer.config import TrainerConfig
from kohyagen.trainer.output import Console


def keep_network_only(models: list[Any], weights: list[dict], output_dir: str) -> None:
    """accelerate's save_state hook: keep the LoRA's tensors, drop the frozen base model's.

    kohya's train_network.py registers the same hook so a state folder holds the network
    only, not gigabytes of U-Net and text encoder weights that never change.
    """
    for i, state in enumerate(weights):
        weights[i] = {k: v for k, v in state.items() if k.startswith("network.")}


class RunSetup:
    """One run's objects, built phase by phase (see `setup`)."""

    def __init__(
        self,
        cfg: TrainerConfig,
        *,
        resume: str | None = None,
        console_factory: Callable[..., Console] = Console,
    ) -> None:
        self.cfg = cfg
        self.args = cfg.args
        self.resume = resume or self.args.resume
        self.console_factory = console_factory
        # the training model once built; accelerate.prepare wraps it (DDP on several GPUs)
        self.model: Any = None

    def setup(self) -> None:
        """Every phase, in kohya's order."""
        self.setup_accelerator_and_logging()
        self.setup_datasets()
        self.setup_models()
        self.setup_network()
        self.setup_data_and_latents()
        self.setup_optimizer_and_schedule()

    def setup_accelerator_and_logging(self) -> None:
        """The accelerator, the console, the TensorBoard folder and the seed."""
        accelerate = require("accelerate")
        require("diffusers")
        args = self.args
        self.log_dir: Path | None = None
        if args.logging_dir and args.log_with in (None, "tensorboard"):
            # kohya names the run's log folder <log_prefix><YYYYmmddHHMMSS> under logging_dir.
            stamp = time.strftime("%Y%m%d%H%M%S")
            self.log_dir = Path(args.logging_dir) / f"{args.log_prefix or ''}{stamp}"
        from kohyagen.trainer.models import cpu_only

        self.mixed_precision = args.mixed_precision or "no"
        cpu_fallback = self.mixed_precision != "no" and cpu_only()
        if cpu_fallback:
            # CPUs emulate bf16/fp16 matmuls: tens of times slower than fp32, for no memory need.
            self.mixed_precision = "no"
        self.accelerator = accelerate.Accelerator(
            gradient_accumulation_steps=int(args.gradient_accumulation_steps or 1),
            mixed_precision=self.mixed_precision,
            log_with="tensorboard" if self.log_dir is not None else None,
            project_dir=str(self.log_dir) if self.log_dir is not None else None,
        )
        self.console = self.console_factory(
            self.accelerator.is_main_process,
            level=args.console_log_level,
            log_file=args.console_log_file,
            simple=bool(args.console_log_simple),
        )
        if cpu_fallback:
            self.console.log(
                f"mixed_precision = {args.mixed_precision!r} on the CPU would be emulated and very"
                " slow; training in fp32 instead",
                level="WARNING",
            )
        # kohya draws a random seed when none is given, then seeds every RNG with it.
        self.seed = args.seed if args.seed is not None else random.randint(0, 2**32 - 1)
        accelerate.utils.set_seed(self.seed)

    def setup_datasets(self) -> None:
        """The training and validation images, split from the same subsets."""
        from kohyagen.trainer import data as data_mod

        # A disjoint validation split even without validation_seed (kohya would draw it twice).
        self.specs = [
            replace(spec, validation_seed=self.seed)
            if spec.validation_seed is None and spec.validation_split > 0
            else spec
            for spec in self.cfg.datasets
        ]
        self.train_ds = data_mod.PreparedGroup(
            tuple(data_mod.prepare(s, training=True) for s in self.specs)
        )
        self.val_ds = data_mod.PreparedGroup(
            tuple(data_mod.prepare(s, training=False) for s in self.specs)
        )
        if not self.train_ds.items:
            raise ConfigError(
                "no training images found",
                path=self.cfg.dataset_config_path or self.args.train_data_dir,
                hint="check image_dir / train_data_dir and the N_name folder names",
            )

    def setup_models(self) -> None:
        """The base model's parts, merged with base_weights, cast and placed on the device."""
        from kohyagen.trainer.models import load_components, place_components

        args = self.args
        self.components = load_components(args, sdxl=self.cfg.is_sdxl)
        if args.base_weights:
            from kohyagen.trainer.merge import merge_base_weights

            merge_base_weights(
                self.components,
                args.base_weights,
                args.base_weights_multiplier,
                sdxl=self.cfg.is_sdxl,
                console=self.console,
            )
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            self.mixed_precision, torch.float32
        )
        self.device = self.accelerator.device
        place_components(
            self.components,
            weight_dtype=self.weight_dtype,
            device=self.device,
            xformers=bool(args.xformers),
            gradient_checkpointing=bool(args.gradient_checkpointing),
        )

    def setup_network(self) -> None:
        """The LoRA modules, hooked into the U-Net and text encoders."""
        from kohyagen.trainer.lora import LoRANetwork
        from kohyagen.trainer.lora_weights import dims_from_weights, load_network_weights
        from kohyagen.trainer.netargs import conv_args, dropout_args
        from kohyagen.trainer.precision import apply_full_precision

        args = self.args
        self.network = LoRANetwork(
            self.components.unet,
            self.components.text_encoders,
            rank=int(args.network_dim or 4),
            alpha=args.network_alpha,
            sdxl=self.cfg.is_sdxl,
            train_unet=not args.network_train_text_encoder_only,
            train_text_encoder=not args.network_train_unet_only,
            dims=dims_from_weights(args.network_weights) if args.dim_from_weights else None,
            **conv_args(args.network_args),
        )
        if args.network_weights:
            load_network_weights(self.network, Path(args.network_weights))
        self.network.set_dropout(args.network_dropout, **dropout_args(args.network_args))
        self.network.apply_to()
        self.network.to(self.device)
        apply_full_precision(
            self.network,
            args,
            weight_dtype=self.weight_dtype,
            accelerator=self.accelerator,
            console=self.console,
        )

    def setup_data_and_latents(self) -> None:
        """The latent cache, the batch datasets, the loader and the number of steps."""
        from kohyagen.trainer.batches import BatchDataset

        args = self.args
        self.cache = self._fill_latent_cache()
        self.train_set = BatchDataset(
            self.train_ds,
            seed=self.seed,
            cache=self.cache,
            prior_loss_weight=float(args.prior_loss_weight),
            flip_aug=bool(args.flip_aug),
        )
        self.val_set = BatchDataset(
            self.val_ds,
            seed=self.seed,
            cache=self.cache,
            prior_loss_weight=1.0,
            flip_aug=False,
            shuffle=False,
        )
        self.loader = self._make_loader()
        self.grad_accum = int(args.gradient_accumulation_steps or 1)
        n_proc = self.accelerator.num_processes
        self.epochs_override: tuple[int, int] | None = None
        self.max_train_steps = int(args.max_train_steps)
        if args.max_train_epochs:
            # kohya: max_train_epochs overrides max_train_steps, counted per process.
            per_epoch = math.ceil(len(self.loader) / n_proc / self.grad_accum)
            self.max_train_steps = int(args.max_train_epochs) * per_epoch
            self.epochs_override = (int(args.max_train_epochs), self.max_train_steps)
        self.train_set.max_train_steps = self.max_train_steps
        self.train_set.grad_accum = self.grad_accum

    def _fill_latent_cache(self) -> Any:
        """The VAE's latents of every image, encoded once; None when not cached."""
        args = self.args
        if not (args.cache_latents or args.cache_latents_to_disk):
            return None
        from kohyagen.trainer.latents import LatentCache

        cache = LatentCache(
            self.components.vae,
            scaling_factor=self.components.scaling_factor,
            sdxl=self.cfg.is_sdxl,
            to_disk=bool(args.cache_latents_to_disk),
            batch_size=int(args.vae_batch_size or 1),
        )
        with self.accelerator.main_process_first():
            cache.fill([*self.train_ds.items, *self.val_ds.items], flip_aug=bool(args.flip_aug))
        return cache

    def _make_loader(self) -> torch.utils.data.DataLoader:
        """The training loader: one prepared batch per item, in the dataset's own order."""
        from kohyagen.trainer.batches import first

        workers = min(int(self.args.max_data_loader_n_workers or 0), os.cpu_count() or 1)
        if self.cache is not None:
            workers = 0  # latents are already in memory; worker processes would copy them
        return torch.utils.data.DataLoader(
            self.train_set,
            batch_size=1,
            shuffle=False,
            collate_fn=first,
            num_workers=workers,
            # Its own generator: starting an epoch then draws nothing from the global RNG, so a
            # run resumed mid-epoch replays the same noise as the uninterrupted one.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def setup_optimizer_and_schedule(self) -> None:
        """Parameter groups, optimizer, LR and noise schedulers; the accelerator wraps them."""
        from kohyagen.trainer.netargs import loraplus_ratios
        from kohyagen.trainer.optim import make_optimizer, make_scheduler

        args = self.args
        self.groups = self.network.param_groups(
            unet_lr=args.unet_lr if args.unet_lr is not None else args.learning_rate,
            text_encoder_lr=(
                args.text_encoder_lr if args.text_encoder_lr is not None else args.learning_rate
            ),
            **loraplus_ratios(args.network_args),
        )
        if not self.groups:
            raise ConfigError(
                "nothing to train: every learning rate is zero",
                path=self.cfg.path,
                hint="set learning_rate",
            )
        trainable = {id(p) for g in self.groups for p in g["params"]}
        for p in self.network.parameters():
            p.requires_grad_(id(p) in trainable)
        self.group_desc = [g["desc"] for g in self.groups]
        self.optimizer, self.optimizer_name = make_optimizer(args, self.groups)
        self.lr_scheduler = make_scheduler(
            args,
            self.optimizer,
            max_train_steps=self.max_train_steps,
            num_processes=self.accelerator.num_processes,
        )
        self._make_training_model()
        self.model, self.optimizer, self.loader, self.lr_scheduler = self.accelerator.prepare(
            self.model, self.optimizer, self.loader, self.lr_scheduler
        )
        self.accelerator.register_save_state_pre_hook(keep_network_only)
        self._count_epochs()

    def _make_training_model(self) -> None:
        """The module that computes one batch's loss; frees what the caches made idle."""
        from kohyagen.trainer.loss import make_noise_scheduler
        from kohyagen.trainer.network_model import TrainingModel, check_text_cache

        args, components = self.args, self.components
        noise_scheduler = make_noise_scheduler(
            components.v_parameterization, zero_terminal_snr=bool(args.zero_terminal_snr)
        )
        if self.cache is not None and self.device.type != "cpu":
            components.vae.to("cpu")  # latents are cached; free the device memory as kohya does
        self.model = TrainingModel(
            components,
            self.network,
            args=args,
            noise_scheduler=noise_scheduler,
            needs_vae=self.cache is None,
        )
        if args.cache_text_encoder_outputs:
            subsets = [sub for sp in self.specs for sub in sp.subsets]
            check_text_cache(args, self.network, subsets, self.cfg)
            captions = [it.caption for it in (*self.train_ds.items, *self.val_ds.items)]
            self.model.cache_text_outputs(captions)
            for te in components.text_encoders:
                te.to("cpu")  # encoded once; they only return to the device to draw samples

    def _count_epochs(self) -> None:
        """Steps per epoch, the number of epochs and the epoch-save interval, as kohya counts."""
        args = self.args
        self.steps_per_epoch = math.ceil(len(self.loader) / self.grad_accum)
        self.num_epochs = math.ceil(self.max_train_steps / self.steps_per_epoch)
        self.save_every = args.save_every_n_epochs
        if args.save_n_epoch_ratio:
            # kohya: save_n_epoch_ratio saves about that many times in the run, overriding
            # save_every_n_epochs.
            self.save_every = max(1, math.floor(self.num_epochs / args.save_n_epoch_ratio))
