"""The training loop: kohya's LoRA training on diffusers models, through accelerate."""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import torch

from kohyagen.errors import ConfigError, require
from kohyagen.trainer.config import TrainerConfig
from kohyagen.trainer.output import Console, LossRecorder, lr_logs, step_bar


def run(
    cfg: TrainerConfig, *, resume: str | None = None, console_factory: type[Console] = Console
) -> dict[str, object]:
    """Train a LoRA as kohya's train_network.py / sdxl_train_network.py would; return a summary."""
    accelerate = require("accelerate")
    require("diffusers")
    from kohyagen.trainer import data as data_mod
    from kohyagen.trainer.batches import BatchDataset, first
    from kohyagen.trainer.checkpointing import Checkpointer
    from kohyagen.trainer.latents import LatentCache
    from kohyagen.trainer.lora import LoRANetwork, dims_from_weights, load_network_weights
    from kohyagen.trainer.loss import make_noise_scheduler
    from kohyagen.trainer.models import cpu_only, load_components, place_components
    from kohyagen.trainer.netargs import conv_args, dropout_args, loraplus_ratios
    from kohyagen.trainer.network_model import TrainingModel, check_text_cache
    from kohyagen.trainer.optim import make_optimizer, make_scheduler
    from kohyagen.trainer.precision import apply_full_precision
    from kohyagen.trainer.saving import dataset_metadata, training_metadata
    from kohyagen.trainer.validation import validation_loss, validation_timesteps

    args = cfg.args
    resume = resume or args.resume
    log_dir = None
    if args.logging_dir and args.log_with in (None, "tensorboard"):
        log_dir = Path(args.logging_dir) / f"{args.log_prefix or ''}{time.strftime('%Y%m%d%H%M%S')}"
    mixed_precision = args.mixed_precision or "no"
    cpu_fallback = mixed_precision != "no" and cpu_only()
    if cpu_fallback:
        # CPUs emulate bf16/fp16 matmuls: tens of times slower than fp32, for no memory need.
        mixed_precision = "no"
    accelerator = accelerate.Accelerator(
        gradient_accumulation_steps=int(args.gradient_accumulation_steps or 1),
        mixed_precision=mixed_precision,
        log_with="tensorboard" if log_dir is not None else None,
        project_dir=str(log_dir) if log_dir is not None else None,
    )
    console = console_factory(
        accelerator.is_main_process,
        level=args.console_log_level,
        log_file=args.console_log_file,
        simple=bool(args.console_log_simple),
    )
    if cpu_fallback:
        console.log(
            f"mixed_precision = {args.mixed_precision!r} on the CPU would be emulated and very"
            " slow; training in fp32 instead",
            level="WARNING",
        )
    seed = args.seed if args.seed is not None else random.randint(0, 2**32 - 1)
    accelerate.utils.set_seed(seed)

    from dataclasses import replace

    # A disjoint validation split even without validation_seed (kohya would draw it twice).
    specs = [
        replace(spec, validation_seed=seed)
        if spec.validation_seed is None and spec.validation_split > 0
        else spec
        for spec in cfg.datasets
    ]
    train_ds = data_mod.PreparedGroup(tuple(data_mod.prepare(s, training=True) for s in specs))
    val_ds = data_mod.PreparedGroup(tuple(data_mod.prepare(s, training=False) for s in specs))
    if not train_ds.items:
        raise ConfigError(
            "no training images found",
            path=cfg.dataset_config_path or args.train_data_dir,
            hint="check image_dir / train_data_dir and the N_name folder names",
        )

    components = load_components(args, sdxl=cfg.is_sdxl)
    if args.base_weights:
        from kohyagen.trainer.merge import merge_base_weights

        merge_base_weights(
            components,
            args.base_weights,
            args.base_weights_multiplier,
            sdxl=cfg.is_sdxl,
            console=console,
        )
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        mixed_precision, torch.float32
    )
    device = accelerator.device
    place_components(
        components,
        weight_dtype=weight_dtype,
        device=device,
        xformers=bool(args.xformers),
        gradient_checkpointing=bool(args.gradient_checkpointing),
    )

    train_unet = not args.network_train_text_encoder_only
    train_te = not args.network_train_unet_only
    network = LoRANetwork(
        components.unet,
        components.text_encoders,
        rank=int(args.network_dim or 4),
        alpha=args.network_alpha,
        sdxl=cfg.is_sdxl,
        train_unet=train_unet,
        train_text_encoder=train_te,
        dims=dims_from_weights(args.network_weights) if args.dim_from_weights else None,
        **conv_args(args.network_args),
    )
    if args.network_weights:
        load_network_weights(network, Path(args.network_weights))
    network.set_dropout(args.network_dropout, **dropout_args(args.network_args))
    network.apply_to()
    network.to(device)
    apply_full_precision(
        network, args, weight_dtype=weight_dtype, accelerator=accelerator, console=console
    )

    cache = None
    if args.cache_latents or args.cache_latents_to_disk:
        cache = LatentCache(
            components.vae,
            scaling_factor=components.scaling_factor,
            sdxl=cfg.is_sdxl,
            to_disk=bool(args.cache_latents_to_disk),
            batch_size=int(args.vae_batch_size or 1),
        )
        with accelerator.main_process_first():
            cache.fill([*train_ds.items, *val_ds.items], flip_aug=bool(args.flip_aug))

    train_set = BatchDataset(
        train_ds,
        seed=seed,
        cache=cache,
        prior_loss_weight=float(args.prior_loss_weight),
        flip_aug=bool(args.flip_aug),
    )
    val_set = BatchDataset(
        val_ds, seed=seed, cache=cache, prior_loss_weight=1.0, flip_aug=False, shuffle=False
    )
    workers = min(int(args.max_data_loader_n_workers or 0), os.cpu_count() or 1)
    if cache is not None:
        workers = 0  # latents are already in memory; worker processes would copy them
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=1,
        shuffle=False,
        collate_fn=first,
        num_workers=workers,
        # Its own generator: starting an epoch then draws nothing from the global RNG, so a
        # run resumed mid-epoch replays the same noise as the uninterrupted one.
        generator=torch.Generator().manual_seed(seed),
    )
    grad_accum = int(args.gradient_accumulation_steps or 1)
    n_proc = accelerator.num_processes
    epochs_override = None
    max_train_steps = int(args.max_train_steps)
    if args.max_train_epochs:
        max_train_steps = int(args.max_train_epochs) * math.ceil(len(loader) / n_proc / grad_accum)
        epochs_override = (int(args.max_train_epochs), max_train_steps)
    train_set.max_train_steps, train_set.grad_accum = max_train_steps, grad_accum

    groups = network.param_groups(
        unet_lr=args.unet_lr if args.unet_lr is not None else args.learning_rate,
        text_encoder_lr=(
            args.text_encoder_lr if args.text_encoder_lr is not None else args.learning_rate
        ),
        **loraplus_ratios(args.network_args),
    )
    if not groups:
        raise ConfigError(
            "nothing to train: every learning rate is zero", path=cfg.path, hint="set learning_rate"
        )
    trainable = {id(p) for g in groups for p in g["params"]}
    for p in network.parameters():
        p.requires_grad_(id(p) in trainable)
    group_desc = [g["desc"] for g in groups]
    optimizer, optimizer_name = make_optimizer(args, groups)
    lr_scheduler = make_scheduler(
        args, optimizer, max_train_steps=max_train_steps, num_processes=n_proc
    )
    noise_scheduler = make_noise_scheduler(
        components.v_parameterization, zero_terminal_snr=bool(args.zero_terminal_snr)
    )
    if cache is not None and device.type != "cpu":
        components.vae.to("cpu")  # latents are cached; free the device memory as kohya does
    model = TrainingModel(
        components, network, args=args, noise_scheduler=noise_scheduler, needs_vae=cache is None
    )
    if args.cache_text_encoder_outputs:
        check_text_cache(args, network, [sub for sp in specs for sub in sp.subsets], cfg)
        model.cache_text_outputs([it.caption for it in (*train_ds.items, *val_ds.items)])
        for te in components.text_encoders:
            te.to("cpu")  # encoded once; they only return to the device to draw samples
    model, optimizer, loader, lr_scheduler = accelerator.prepare(
        model, optimizer, loader, lr_scheduler
    )

    def keep_network_only(
        models: list[Any], weights: list[dict[str, Any]], output_dir: str
    ) -> None:
        for i, state in enumerate(weights):
            weights[i] = {k: v for k, v in state.items() if k.startswith("network.")}

    accelerator.register_save_state_pre_hook(keep_network_only)

    steps_per_epoch = math.ceil(len(loader) / grad_accum)
    num_epochs = math.ceil(max_train_steps / steps_per_epoch)
    save_every = args.save_every_n_epochs
    if args.save_n_epoch_ratio:
        save_every = max(1, math.floor(num_epochs / args.save_n_epoch_ratio))

    initial_step = 0
    first_epoch = 0
    if resume:
        state_dir = Path(resume)
        if not (state_dir / "train_state.json").is_file():
            raise ConfigError(
                "not a training state folder (no train_state.json)",
                path=state_dir,
                hint="pass a <name>-state or <name>-NNNNNN-state folder written with save_state",
            )
        console.log(f"resume training from local state: {state_dir}")
        accelerator.load_state(str(state_dir), strict=False)
        state = json.loads((state_dir / "train_state.json").read_text())
        initial_step = int(state.get("current_step", 0))
        first_epoch = int(state.get("current_epoch", 0))

    num_train_images = train_ds.train_count
    num_val_images = len(val_ds.items)
    console.summary(
        device=str(accelerator.device),
        epochs_override=epochs_override,
        train_images=num_train_images,
        validation_images=num_val_images,
        reg_images=train_ds.reg_count,
        batches_per_epoch=len(loader),
        epochs=num_epochs,
        batch_size=", ".join(str(sp.batch_size) for sp in specs),
        grad_accum=grad_accum,
        total_steps=max_train_steps,
    )

    session_id = random.randint(0, 2**32)
    started = time.time()
    metadata = training_metadata(
        args,
        sdxl=cfg.is_sdxl,
        v_param=components.v_parameterization,
        session_id=session_id,
        started_at=started,
        num_train_images=num_train_images,
        num_validation_images=num_val_images,
        num_reg_images=train_ds.reg_count,
        num_batches_per_epoch=len(loader),
        num_epochs=num_epochs,
        max_train_steps=max_train_steps,
        optimizer_name=optimizer_name,
        dataset_info=dataset_metadata(cfg, train_ds),
        resolution=specs[0].resolution,
    )

    if log_dir is not None:
        accelerator.init_trackers(args.log_tracker_name or "network_train")

    out_dir = Path(args.output_dir)
    unwrapped = accelerator.unwrap_model(model)

    def sample(epoch: int | None, step: int) -> None:
        if not args.sample_prompts or not accelerator.is_main_process:
            return
        from kohyagen.trainer.sample import sample_images

        console.log(f"generating sample images at step / サンプル画像生成 ステップ: {step}")
        sample_images(
            components,
            args,
            out_dir / "sample",
            epoch=epoch,
            step=step,
            device=accelerator.device,
            v_prediction=components.v_parameterization,
        )

    ckpt = Checkpointer(
        accelerator,
        console,
        args,
        out_dir=out_dir,
        metadata=metadata,
        network=unwrapped.network,
        save_every=save_every,
    )

    recorder = LossRecorder()
    global_step = initial_step
    bar = step_bar(max_train_steps, initial_step, accelerator.is_local_main_process)
    if args.sample_at_first:
        sample(None, 0)

    def validate(desc: str, postfix_key: str) -> float | None:
        network.eval()  # no dropout while measuring
        try:
            return measure(desc, postfix_key)
        finally:
            network.train()

    def measure(desc: str, postfix_key: str) -> float | None:
        return validation_loss(
            model,
            val_set,
            timesteps=validation_timesteps(args.min_timestep, args.max_timestep),
            seed=int(args.validation_seed or seed),
            max_batches=args.max_validation_steps,
            device=accelerator.device,
            desc=desc,
            postfix_key=postfix_key,
            show=accelerator.is_local_main_process,
        )

    loop_started = time.perf_counter()
    skip_in_first = initial_step - first_epoch * steps_per_epoch if resume else 0
    for epoch in range(first_epoch, num_epochs):
        if global_step >= max_train_steps:
            break
        console.epoch_header(epoch + 1, num_epochs)
        console.log(f"epoch is incremented. current_epoch: {epoch}, epoch: {epoch + 1}")
        train_set.start_epoch(epoch)  # not set_epoch: accelerate would call that with its own count
        network.train()
        for step, batch in enumerate(loader):
            if epoch == first_epoch and step < skip_in_first * grad_accum:
                continue
            with accelerator.accumulate(model):
                loss = model(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(
                        [p for g in groups for p in g["params"]], float(args.max_grad_norm)
                    )
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            # kohya applies it after every batch, also between accumulated steps.
            norms = (
                network.apply_max_norm(args.scale_weight_norms) if args.scale_weight_norms else None
            )
            if accelerator.sync_gradients:
                bar.update(1)
                global_step += 1
                if args.save_every_n_steps and global_step % int(args.save_every_n_steps) == 0:
                    accelerator.wait_for_everyone()
                    ckpt.save_at_step(epoch, global_step)
                if args.sample_every_n_steps and global_step % int(args.sample_every_n_steps) == 0:
                    sample(None, global_step)
            current = float(loss.detach())
            # This run's first epoch fills the window, also after a resume.
            recorder.add(epoch=epoch - first_epoch, step=step, loss=current)
            avr = recorder.moving_average
            bar.set_postfix({**(norms.postfix() if norms else {}), "avr_loss": avr})
            logs = {"loss/current": current, "loss/average": avr, **(norms.logs() if norms else {})}
            logs.update(lr_logs(optimizer, group_desc))
            if log_dir is not None:
                accelerator.log(logs, step=global_step)
            if (
                args.validate_every_n_steps
                and accelerator.sync_gradients
                and global_step % int(args.validate_every_n_steps) == 0
            ):
                val = validate("validation steps", "val_avg_loss")
                if val is not None and log_dir is not None:
                    accelerator.log(
                        {
                            "loss/validation/step_average": val,
                            "loss/validation/step_divergence": val - avr,
                        },
                        step=global_step,
                    )
            if global_step >= max_train_steps:
                break
        if log_dir is not None:
            accelerator.log({"loss/epoch_average": recorder.moving_average}, step=epoch + 1)
        every_val = int(args.validate_every_n_epochs or 1)
        if (epoch + 1) % every_val == 0:
            val = validate("epoch validation steps", "val_epoch_avg_loss")
            if val is not None and log_dir is not None:
                accelerator.log(
                    {
                        "loss/validation/epoch_average": val,
                        "loss/validation/epoch_divergence": val - recorder.moving_average,
                    },
                    step=epoch + 1,
                )
        accelerator.wait_for_everyone()
        if save_every and (epoch + 1) % int(save_every) == 0 and epoch + 1 < num_epochs:
            ckpt.save_at_epoch(epoch + 1, global_step)
        if args.sample_every_n_epochs and (epoch + 1) % int(args.sample_every_n_epochs) == 0:
            sample(epoch + 1, global_step)

    bar.close()
    train_seconds = time.perf_counter() - loop_started
    accelerator.wait_for_everyone()
    final = ckpt.save_final(num_epochs, global_step)
    console.log("model saved.")
    accelerator.end_training()
    network.restore()
    console.close()
    return {
        "final": final,
        "checkpoints": ckpt.saved,
        "steps": global_step - initial_step,
        "epochs": num_epochs,
        "train_seconds": train_seconds,
    }
