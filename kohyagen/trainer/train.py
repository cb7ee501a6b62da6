"""The training loop: kohya's LoRA training on diffusers models, through accelerate."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch

from kohyagen.errors import ConfigError, require
from kohyagen.trainer.config import TrainerConfig
from kohyagen.trainer.output import Console, LossRecorder, lr_logs, step_bar


class TrainingModel(torch.nn.Module):
    """U-Net, text encoders and the LoRA network in one module, so DDP syncs the LoRA grads."""

    def __init__(self, components, network, *, args, noise_scheduler):
        super().__init__()
        self.components = components
        self.unet = components.unet
        self.text_encoders = torch.nn.ModuleList(components.text_encoders)
        self.vae = components.vae
        self.network = network
        self.args = args
        self.noise_scheduler = noise_scheduler

    def latents_of(self, batch):
        import torch

        if "latents" in batch:
            return batch["latents"]
        with torch.no_grad():
            param = next(self.vae.parameters())
            pixels = batch["pixels"].to(param.device, param.dtype)
            dist = self.vae.encode(pixels).latent_dist
            return (dist.sample() * self.components.scaling_factor).float()

    def forward(self, batch, timesteps=None, noise=None):
        import torch

        from kohyagen.trainer.loss import diffusion_loss, sample_noise
        from kohyagen.trainer.models import encode_prompts

        args = self.args
        device = next(self.unet.parameters()).device
        latents = self.latents_of(batch).to(device)
        dtype = next(self.unet.parameters()).dtype
        train_te = len(self.network.text_encoder_loras) > 0 and self.training
        with torch.set_grad_enabled(train_te):
            hidden, pooled = encode_prompts(
                self.components, batch["captions"], clip_skip=args.clip_skip, device=device
            )
        if noise is None:
            noise = sample_noise(
                latents,
                noise_offset=args.noise_offset,
                random_strength=bool(args.noise_offset_random_strength),
            )
        if timesteps is None:
            lo = int(args.min_timestep or 0)
            hi = int(args.max_timestep or 1000)
            timesteps = torch.randint(lo, hi, (latents.shape[0],), device=device)
        added = None
        if self.components.sdxl:
            added = {
                "text_embeds": pooled.to(dtype),
                "time_ids": batch["time_ids"].to(device, dtype),
            }
        return diffusion_loss(
            self.unet,
            self.noise_scheduler,
            latents.to(dtype),
            hidden.to(dtype),
            timesteps=timesteps,
            noise=noise.to(device, dtype),
            weights=batch["weights"],
            v_prediction=self.components.v_parameterization,
            min_snr_gamma=args.min_snr_gamma,
            added_cond=added,
        )


def _output_name(args, kind: str) -> str:
    if args.output_name:
        return args.output_name
    return {"epoch": "epoch", "step": "at", "final": "last"}[kind]


def _ext(args) -> str:
    return "." + (args.save_model_as or "safetensors")


def _validation_timesteps(args) -> list[int]:
    lo = int(args.min_timestep or 0)
    hi = int(args.max_timestep or 1000)
    return [lo + (hi - lo) * (i + 1) // 5 for i in range(4)]


def run(
    cfg: TrainerConfig, *, resume: str | None = None, console_factory=Console
) -> dict[str, object]:
    """Train a LoRA as kohya's train_network.py / sdxl_train_network.py would; return a summary."""
    accelerate = require("accelerate")
    require("diffusers")
    from kohyagen.trainer import data as data_mod
    from kohyagen.trainer.batches import BatchDataset, first
    from kohyagen.trainer.latents import LatentCache
    from kohyagen.trainer.lora import LoRANetwork
    from kohyagen.trainer.loss import make_noise_scheduler
    from kohyagen.trainer.models import load_components
    from kohyagen.trainer.optim import make_optimizer, make_scheduler
    from kohyagen.trainer.saving import (
        epoch_name,
        json_field,
        step_name,
        training_metadata,
        write_lora,
    )

    args = cfg.args
    resume = resume or args.resume
    log_dir = None
    if args.logging_dir and args.log_with in (None, "tensorboard"):
        log_dir = Path(args.logging_dir) / f"{args.log_prefix or ''}{time.strftime('%Y%m%d%H%M%S')}"
    accelerator = accelerate.Accelerator(
        gradient_accumulation_steps=int(args.gradient_accumulation_steps or 1),
        mixed_precision=args.mixed_precision or "no",
        log_with="tensorboard" if log_dir is not None else None,
        project_dir=str(log_dir) if log_dir is not None else None,
    )
    console = console_factory(accelerator.is_main_process)
    seed = args.seed if args.seed is not None else random.randint(0, 2**32 - 1)
    accelerate.utils.set_seed(seed)

    if len(cfg.datasets) != 1:
        raise ConfigError(
            "the builtin trainer takes exactly one [[datasets]] entry",
            path=cfg.dataset_config_path,
            hint="merge the datasets, or use the kohya backend",
        )
    spec = cfg.datasets[0]
    if spec.validation_seed is None and spec.validation_split > 0:
        from dataclasses import replace

        spec = replace(spec, validation_seed=seed)  # a disjoint split even without a seed
    train_ds = data_mod.prepare(spec, training=True)
    val_ds = data_mod.prepare(spec, training=False)
    if not train_ds.items:
        raise ConfigError(
            "no training images found",
            path=cfg.dataset_config_path or args.train_data_dir,
            hint="check image_dir / train_data_dir and the N_name folder names",
        )

    components = load_components(args, sdxl=cfg.is_sdxl)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        args.mixed_precision, torch.float32
    )
    device = accelerator.device
    for module in [components.unet, components.vae, *components.text_encoders]:
        module.requires_grad_(False)
        module.eval()
    for module in [components.unet, *components.text_encoders, components.vae]:
        dtype = torch.float32 if module is components.vae else weight_dtype
        # .to(dtype) on a model already in that dtype only prints a diffusers warning.
        if next(module.parameters()).dtype != dtype:
            module.to(dtype)
        module.to(device)
    if args.xformers:
        try:
            components.unet.enable_xformers_memory_efficient_attention()
        except Exception as exc:  # diffusers raises several kinds when xformers is absent
            raise ConfigError(
                f"xformers is not usable here: {exc}",
                hint="pip install xformers, or use sdpa = true",
            ) from exc
    if args.gradient_checkpointing:
        components.unet.enable_gradient_checkpointing()
        components.unet.train()
        for te in components.text_encoders:
            te.gradient_checkpointing_enable()

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
    )
    if args.network_weights:
        from safetensors.torch import load_file

        network.load_kohya_weights(load_file(args.network_weights))
    network.apply_to()
    network.to(device)

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
    workers = min(int(args.max_data_loader_n_workers or 0), 8)
    if cache is not None:
        workers = 0  # latents are already in memory; worker processes would copy them
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=1, shuffle=False, collate_fn=first, num_workers=workers
    )
    grad_accum = int(args.gradient_accumulation_steps or 1)
    n_proc = accelerator.num_processes
    epochs_override = None
    max_train_steps = int(args.max_train_steps)
    if args.max_train_epochs:
        max_train_steps = int(args.max_train_epochs) * math.ceil(len(loader) / n_proc / grad_accum)
        epochs_override = (int(args.max_train_epochs), max_train_steps)

    groups = network.param_groups(
        unet_lr=args.unet_lr if args.unet_lr is not None else args.learning_rate,
        text_encoder_lr=(
            args.text_encoder_lr if args.text_encoder_lr is not None else args.learning_rate
        ),
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
    noise_scheduler = make_noise_scheduler(components.v_parameterization)
    model = TrainingModel(components, network, args=args, noise_scheduler=noise_scheduler)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(
        model, optimizer, loader, lr_scheduler
    )

    def keep_network_only(models, weights, output_dir):
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
        batch_size=spec.batch_size,
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
        dataset_info=_dataset_metadata(cfg, train_ds, json_field),
        model_name=components.name,
        resolution=spec.resolution,
    )

    if log_dir is not None:
        accelerator.init_trackers(args.log_tracker_name or "network_train")

    out_dir = Path(args.output_dir)
    ext = _ext(args)
    unwrapped = accelerator.unwrap_model(model)

    def save_model(filename: str, *, epoch: int, step: int) -> Path:
        path = out_dir / filename
        console.saving(path)
        if accelerator.is_main_process:
            md = dict(metadata)
            if not args.no_metadata:
                md["ss_training_finished_at"] = str(time.time())
                md["ss_steps"] = str(step)
                md["ss_epoch"] = str(epoch)
            write_lora(
                path, unwrapped.network.kohya_state_dict(), md, save_precision=args.save_precision
            )
        return path

    def save_state(dirname: str, *, epoch: int, step: int) -> None:
        state_dir = out_dir / dirname
        accelerator.save_state(str(state_dir))
        if accelerator.is_main_process:
            (state_dir / "train_state.json").write_text(
                json.dumps({"current_epoch": epoch, "current_step": step})
            )

    def sample(epoch: int | None, step: int) -> None:
        if not args.sample_prompts or not accelerator.is_main_process:
            return
        from kohyagen.trainer.sample import sample_images

        sample_images(
            components,
            args,
            out_dir / "sample",
            epoch=epoch,
            step=step,
            device=accelerator.device,
            v_prediction=components.v_parameterization,
        )

    recorder = LossRecorder()
    global_step = initial_step
    bar = step_bar(max_train_steps, initial_step, accelerator.is_local_main_process)
    saved: list[Path] = []
    if args.sample_at_first:
        sample(None, 0)

    def validate(desc: str, postfix_key: str) -> float | None:
        if not len(val_set):
            return None
        from tqdm.auto import tqdm

        batches = list(range(len(val_set)))
        if args.max_validation_steps:
            batches = batches[: int(args.max_validation_steps)]
        ts_list = _validation_timesteps(args)
        gen = torch.Generator().manual_seed(int(args.validation_seed or seed))
        losses: list[float] = []
        vbar = tqdm(
            total=len(batches) * len(ts_list),
            desc=desc,
            disable=not accelerator.is_local_main_process,
            leave=False,
        )
        with torch.no_grad():
            for index in batches:
                batch = val_set[index]
                latents = unwrapped.latents_of(batch)
                for t in ts_list:
                    from kohyagen.trainer.loss import sample_noise

                    noise = sample_noise(
                        latents, noise_offset=None, random_strength=False, generator=gen
                    )
                    timesteps = torch.full((latents.shape[0],), t, device=accelerator.device)
                    batch_l = dict(batch, latents=latents)
                    loss = model(batch_l, timesteps=timesteps, noise=noise)
                    losses.append(float(loss))
                    vbar.update(1)
                    vbar.set_postfix({postfix_key: sum(losses) / len(losses), "timestep": t})
        vbar.close()
        return sum(losses) / len(losses)

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
            if accelerator.sync_gradients:
                bar.update(1)
                global_step += 1
                if args.save_every_n_steps and global_step % int(args.save_every_n_steps) == 0:
                    accelerator.wait_for_everyone()
                    saved.append(
                        save_model(
                            step_name(_output_name(args, "step"), global_step, ext),
                            epoch=epoch,
                            step=global_step,
                        )
                    )
                    if args.save_state:
                        console.log(f"saving state at step {global_step}")
                        save_state(
                            step_name(_output_name(args, "step"), global_step, "-state"),
                            epoch=epoch,
                            step=global_step,
                        )
                if args.sample_every_n_steps and global_step % int(args.sample_every_n_steps) == 0:
                    sample(None, global_step)
            current = float(loss.detach())
            recorder.add(epoch=epoch, step=step, loss=current)
            avr = recorder.moving_average
            bar.set_postfix({"avr_loss": avr})
            logs = {"loss/current": current, "loss/average": avr}
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
            saved.append(
                save_model(
                    epoch_name(_output_name(args, "epoch"), epoch + 1, ext),
                    epoch=epoch + 1,
                    step=global_step,
                )
            )
            if args.save_state:
                console.log(f"saving state at epoch {epoch + 1}")
                save_state(
                    epoch_name(_output_name(args, "epoch"), epoch + 1, "-state"),
                    epoch=epoch + 1,
                    step=global_step,
                )
        if args.sample_every_n_epochs and (epoch + 1) % int(args.sample_every_n_epochs) == 0:
            sample(epoch + 1, global_step)

    bar.close()
    train_seconds = time.perf_counter() - loop_started
    accelerator.wait_for_everyone()
    if args.save_state or args.save_state_on_train_end:
        console.log("saving last state.")
        save_state(f"{_output_name(args, 'final')}-state", epoch=num_epochs, step=global_step)
    final = save_model(f"{_output_name(args, 'final')}{ext}", epoch=num_epochs, step=global_step)
    saved.append(final)
    console.log("model saved.")
    accelerator.end_training()
    network.restore()
    return {
        "final": final,
        "checkpoints": saved,
        "steps": global_step - initial_step,
        "epochs": num_epochs,
        "train_seconds": train_seconds,
    }


def _dataset_metadata(cfg: TrainerConfig, train_ds, json_field) -> dict[str, str]:
    """ss_dataset_dirs, ss_tag_frequency and (with a dataset config) ss_datasets."""
    args = cfg.args
    dirs: dict[str, dict[str, int]] = {}
    reg_dirs: dict[str, dict[str, int]] = {}
    tags: dict[str, dict[str, int]] = {}
    for subset in train_ds.spec.subsets:
        items = [it for it in train_ds.items if it.subset is subset]
        target = reg_dirs if subset.is_reg else dirs
        target[subset.image_dir.name] = {"n_repeats": subset.num_repeats, "img_count": len(items)}
        freq = tags.setdefault(subset.image_dir.name, {})
        for it in items:
            for tag in (t.strip() for t in it.caption.split(",")):
                if tag:
                    freq[tag] = freq.get(tag, 0) + 1
    spec = train_ds.spec
    out = {"ss_tag_frequency": json_field(tags), "ss_dataset_dirs": json_field(dirs)}
    if cfg.dataset_config_path is None:
        out.update(
            {
                "ss_batch_size_per_device": str(spec.batch_size),
                "ss_total_batch_size": str(
                    spec.batch_size * int(args.gradient_accumulation_steps or 1)
                ),
                "ss_resolution": str(spec.resolution),
                "ss_color_aug": "False",
                "ss_flip_aug": str(bool(args.flip_aug)),
                "ss_random_crop": "False",
                "ss_shuffle_caption": str(bool(args.shuffle_caption)),
                "ss_enable_bucket": str(spec.enable_bucket),
                "ss_bucket_no_upscale": str(spec.bucket_no_upscale),
                "ss_min_bucket_reso": str(spec.min_bucket_reso if spec.enable_bucket else None),
                "ss_max_bucket_reso": str(spec.max_bucket_reso if spec.enable_bucket else None),
                "ss_keep_tokens": str(args.keep_tokens),
                "ss_reg_dataset_dirs": json_field(reg_dirs),
                "ss_bucket_info": json_field(_bucket_info(train_ds)),
            }
        )
    else:
        subsets = [
            {
                "img_count": len([it for it in train_ds.items if it.subset is s]),
                "num_repeats": s.num_repeats,
                "color_aug": False,
                "flip_aug": s.flip_aug,
                "random_crop": False,
                "shuffle_caption": s.shuffle_caption,
                "keep_tokens": s.keep_tokens,
                "keep_tokens_separator": s.keep_tokens_separator,
                "secondary_separator": None,
                "enable_wildcard": False,
                "caption_prefix": s.caption_prefix,
                "caption_suffix": s.caption_suffix,
                "resize_interpolation": None,
                "image_dir": s.image_dir.name,
                "class_tokens": s.class_tokens,
                "is_reg": s.is_reg,
            }
            for s in spec.subsets
        ]
        out["ss_datasets"] = json_field(
            [
                {
                    "is_dreambooth": True,
                    "batch_size_per_device": spec.batch_size,
                    "num_train_images": train_ds.train_count,
                    "num_reg_images": train_ds.reg_count,
                    "resolution": list(spec.resolution),
                    "enable_bucket": spec.enable_bucket,
                    "min_bucket_reso": spec.min_bucket_reso if spec.enable_bucket else None,
                    "max_bucket_reso": spec.max_bucket_reso if spec.enable_bucket else None,
                    "tag_frequency": tags,
                    "bucket_info": _bucket_info(train_ds) if spec.enable_bucket else None,
                    "resize_interpolation": None,
                    "subsets": subsets,
                }
            ]
        )
    return out


def _bucket_info(train_ds) -> dict | None:
    if not train_ds.spec.enable_bucket:
        return None
    counts: dict[tuple[int, int], int] = {}
    for it in train_ds.items:
        counts[it.bucket] = counts.get(it.bucket, 0) + (
            it.subset.num_repeats if not it.is_reg else 1
        )
    buckets = {
        str(i): {"resolution": list(reso), "count": n}
        for i, reso in enumerate(sorted(counts))
        for n in [counts[reso]]
    }
    return {"buckets": buckets, "mean_img_ar_error": 0.0}
