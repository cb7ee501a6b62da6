"""A fake kohya train_network.py for kohyagen's tests.

It prints what sd-scripts prints (formats copied from real runs in facts/kohya/samples:
stdout lines, rich-style log lines and \r-updated tqdm bars on stderr, each step drawn
twice), writes checkpoint .safetensors files with kohya's names and metadata, and writes
real TensorBoard event files with the tensorboard package's own writer.

Behaviour is planted through the environment:
  FAKE_KOHYA_LOSSES        epoch-average losses, e.g. "0.30,0.20,0.15,0.22,0.28"
  FAKE_KOHYA_VAL_LOSSES    validation losses per epoch (prints validation bars, logs tags)
  FAKE_KOHYA_STEPS         steps per epoch (default 4)
  FAKE_KOHYA_OOM_ABOVE_BATCH  run out of memory when the batch size is above this
  FAKE_KOHYA_MODE          "nodata" (kohya's no-data error, exit 0) or "nan" (NaN loss)
  FAKE_KOHYA_NAN_STEP      first step with a NaN loss (default 3)
  FAKE_KOHYA_STEP_SLEEP    seconds per step (default 0)
  FAKE_KOHYA_OOM_UNLESS_SWAP  (DiT scripts) run out of memory while blocks_to_swap is
                           below this
  FAKE_KOHYA_GRAD_NAN_STEP (FLUX) first step whose norm/avg_grad_norm is NaN

Run through one of the DiT family scripts (the wrappers beside it pass their name in
FAKE_SCRIPT) it behaves as that script does at start-up (model-families.md): model files
are opened (FileNotFoundError as kohya raises it), its bucket step and Chroma's T5 mask
are asserted, FLUX logs norm/avg_grad_norm and block swapping is announced. With
sample_prompts, sample images are written per epoch under output_dir/sample/ with
kohya's names.
"""

import argparse
import json
import math
import os
import struct
import sys
import time

import tomllib


def log(level: str, message: str, where: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    sys.stderr.write(f"{stamp} {level:<8} {message:<40} {where}\n")
    sys.stderr.flush()


def bar(desc: str, n: int, total: int, elapsed: float, postfix: str = "") -> str:
    pct = int(100 * n / total)
    filled = 10 * n / total
    full = int(filled)
    parts = " ▏▎▍▌▋▊▉"
    cells = "█" * full
    if full < 10:
        cells += parts[int((filled - full) * 8)] + " " * (9 - full)
    rate = elapsed / n if n else 0.0
    remaining = rate * (total - n)

    def mmss(seconds: float) -> str:
        seconds = int(seconds)
        return f"{seconds // 60:02d}:{seconds % 60:02d}"

    timing = f"{mmss(elapsed)}<{mmss(remaining)}, {rate:5.2f}s/it" if n else "00:00<?, ?it/s"
    post = f", {postfix}" if postfix else ""
    return f"\r{desc}: {pct:3d}%|{cells}| {n}/{total} [{timing}{post}]"


def fmt(value: float) -> str:
    return f"{value:.3g}"


def write_safetensors(path: str, metadata: dict) -> None:
    data = struct.pack("<16f", *([0.01] * 16))
    header = {
        "__metadata__": {k: str(v) for k, v in metadata.items()},
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": {
            "dtype": "F32",
            "shape": [4, 4],
            "data_offsets": [0, len(data)],
        },
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw + data)


class Events:
    def __init__(self, logging_dir, prefix):
        self.writer = None
        if not logging_dir:
            return
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.event_pb2, self.summary_pb2 = event_pb2, summary_pb2
        folder = os.path.join(logging_dir, prefix + time.strftime("%Y%m%d%H%M%S"), "network_train")
        self.writer = EventFileWriter(folder)

    def scalar(self, tag, value, step):
        if self.writer is None:
            return
        summary = self.summary_pb2.Summary(
            value=[self.summary_pb2.Summary.Value(tag=tag, simple_value=value)]
        )
        self.writer.add_event(
            self.event_pb2.Event(wall_time=time.time(), step=step, summary=summary)
        )
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


SCRIPT = globals().get("FAKE_SCRIPT", "train_network")  # set by the family wrappers
FILE_KEYS = ("pretrained_model_name_or_path", "clip_l", "clip_g", "t5xxl", "ae", "gemma2",
             "text_encoder", "byt5", "qwen3", "vae")
BUCKET_STEP = {"flux_train_network": 64, "lumina_train_network": 64,
               "hunyuan_image_train_network": 64, "sd3_train_network": 32,
               "anima_train_network": 16}


def fail(text: str) -> int:
    sys.stderr.write(f"Traceback (most recent call last):\n  File \"{SCRIPT}.py\"\n{text}\n")
    return 1


def family_checks(conf: dict, ds: dict) -> int:
    """kohya's own start-up checks of the DiT scripts; 0 when they pass."""
    for key in FILE_KEYS:
        value = conf.get(key)
        if isinstance(value, str) and value and not os.path.exists(value):
            return fail(f'FileNotFoundError: No such file or directory: "{value}"')
    step = ds.get("general", {}).get("bucket_reso_steps", 64)
    if step % 64 and SCRIPT in ("flux_train_network", "lumina_train_network",
                                "hunyuan_image_train_network"):
        return fail(f"AssertionError: bucket_reso_steps is {step}. it must be divisible by 64.")
    if step % BUCKET_STEP[SCRIPT]:
        return fail(f"AssertionError: bucket_reso_steps must be divisible by {BUCKET_STEP[SCRIPT]}")
    if conf.get("model_type") == "chroma" and not conf.get("apply_t5_attn_mask"):
        return fail("AssertionError: apply_t5_attn_mask must be True for Chroma")
    swap = int(conf.get("blocks_to_swap", 0) or 0)
    if swap and SCRIPT == "flux_train_network":
        print(f"FLUX: Block swap enabled. Swapping {swap} blocks, double blocks: {swap // 2}, "
              f"single blocks: {(swap - swap // 2) * 2}.")
    need = os.environ.get("FAKE_KOHYA_OOM_UNLESS_SWAP")
    if need is not None and swap < int(need):
        sys.stderr.write(
            "Traceback (most recent call last):\n"
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.00 GiB.\n"
        )
        return 1
    return 0


def write_sample(conf: dict, epoch: int) -> None:
    folder = os.path.join(conf["output_dir"], "sample")
    os.makedirs(folder, exist_ok=True)
    stamp = time.strftime("%Y%m%d%H%M%S")
    name = conf.get("output_name", "last")
    path = os.path.join(folder, f"{name}_e{epoch:06d}_00_{stamp}_1.png")
    from PIL import Image

    Image.new("RGB", (8, 8), (epoch * 20 % 255, 0, 0)).save(path)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config_file", required=True)
    parser.add_argument("--dataset_config")
    args, _unknown = parser.parse_known_args()
    with open(args.config_file, "rb") as handle:
        raw = tomllib.load(handle)
    conf = {}
    for key, value in raw.items():
        conf.update(value if isinstance(value, dict) else {key: value})
    batch = int(conf.get("train_batch_size", 1))
    dataset_config = args.dataset_config or conf.get("dataset_config")
    if dataset_config:
        with open(dataset_config, "rb") as handle:
            ds = tomllib.load(handle)
        sizes = [d.get("batch_size") for d in ds.get("datasets", [])]
        sizes.append(ds.get("general", {}).get("batch_size"))
        sizes = [s for s in sizes if s]
        batch = max(sizes) if sizes else batch
        log("INFO", f"Loading dataset config from {dataset_config}", "train_network.py:519")
    else:
        ds = {}
    if SCRIPT in BUCKET_STEP:
        failed = family_checks(conf, ds)
        if failed:
            return failed
    mode = os.environ.get("FAKE_KOHYA_MODE", "")

    print("accelerator device: cpu")
    print(f"import network module: {conf.get('network_module')}")
    if mode == "nodata":
        log(
            "ERROR",
            "No data found. Please verify arguments (train_data_dir must be",
            "train_network.py:577",
        )
        sys.stderr.write(" " * 29 + "the parent of folders with images) /\n")
        return 0  # kohya returns normally here

    epochs = int(conf.get("max_train_epochs", 2))
    per_epoch = int(os.environ.get("FAKE_KOHYA_STEPS", "4"))
    total = epochs * per_epoch
    losses = [float(x) for x in os.environ.get("FAKE_KOHYA_LOSSES", "").split(",") if x]
    losses += [losses[-1] if losses else 1.0] * (epochs - len(losses))
    val_losses = [float(x) for x in os.environ.get("FAKE_KOHYA_VAL_LOSSES", "").split(",") if x]
    sleep = float(os.environ.get("FAKE_KOHYA_STEP_SLEEP", "0"))
    nan_step = int(os.environ.get("FAKE_KOHYA_NAN_STEP", "3"))
    output_dir = conf["output_dir"]
    name = conf.get("output_name", "last")
    save_every = int(conf.get("save_every_n_epochs", 0) or 0)
    os.makedirs(output_dir, exist_ok=True)

    print("prepare optimizer, data loader etc.")
    print(f"override steps. steps for {epochs} epochs is / 指定エポックまでのステップ数: {total}")
    print("running training / 学習開始")
    print(f"  num epochs / epoch数: {epochs}")
    print(f"  batch size per device / バッチサイズ: {batch}")
    print(f"  total optimization steps / 学習ステップ数: {total}")
    events = Events(conf.get("logging_dir"), conf.get("log_prefix", ""))
    sys.stderr.write(bar("steps", 0, total, 0))
    sys.stderr.flush()

    limit = os.environ.get("FAKE_KOHYA_OOM_ABOVE_BATCH")
    if limit is not None and batch > int(limit):
        events.scalar("loss/current", 99.0, 0)  # a failed attempt leaves junk behind
        events.close()
        sys.stderr.write(
            "\nTraceback (most recent call last):\n"
            '  File "train_network.py", line 1460, in train\n'
            "    loss = self.process_batch(batch, ...)\n"
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
            "total capacity of 23.55 GiB of which 1.21 GiB is free. Of the allocated memory 20.1 "
            "GiB is allocated by PyTorch\n"
        )
        return 1

    started = time.time() - 0.5
    window = []
    step = 0
    for epoch in range(1, epochs + 1):
        print(f"\nepoch {epoch}/{epochs}\n")
        log("INFO", "epoch is incremented.", "train_util.py:784")
        sys.stderr.write(" " * 29 + f"current_epoch: {epoch - 1}, epoch: {epoch}\n")
        epoch_losses = []
        for i in range(per_epoch):
            step += 1
            jitter = 0.01 * (1 if i % 2 == 0 else -1) if per_epoch % 2 == 0 else 0.0
            current = losses[epoch - 1] + jitter
            if mode == "nan" and step >= nan_step:
                current = math.nan
            if sleep:
                time.sleep(sleep)
            elapsed = time.time() - started
            previous = fmt(sum(window) / len(window)) if window else ""
            sys.stderr.write(
                bar("steps", step, total, elapsed, f"avr_loss={previous}" if previous else "")
            )
            if epoch == 1:
                window.append(current)
            else:
                window[i] = current
            average = sum(window) / len(window)
            epoch_losses.append(current)
            sys.stderr.write(bar("steps", step, total, elapsed, f"avr_loss={fmt(average)}"))
            sys.stderr.flush()
            events.scalar("loss/current", current, step)
            events.scalar("loss/average", average, step)
            events.scalar("lr/unet", 1e-4, step)
            if SCRIPT == "flux_train_network":  # networks.lora_flux logs it every step
                bad = int(os.environ.get("FAKE_KOHYA_GRAD_NAN_STEP", "0") or 0)
                events.scalar("norm/avg_grad_norm", math.nan if bad and step >= bad else 0.5 / step,
                              step)
        if epoch <= len(val_losses):
            sys.stderr.write("\n")
            for n in range(5):
                post = (
                    f"val_epoch_avg_loss={fmt(val_losses[epoch - 1])}, timestep={200 * n}"
                    if n
                    else ""
                )
                sys.stderr.write(bar("epoch validation steps", n, 4, 0.5 * n, post) + "\x1b[A\n")
            events.scalar("loss/validation/epoch_average", val_losses[epoch - 1], epoch)
        events.scalar("loss/epoch_average", sum(epoch_losses) / len(epoch_losses), epoch)
        meta = {
            "ss_epoch": epoch,
            "ss_steps": step,
            "ss_output_name": name,
            "ss_num_epochs": epochs,
        }
        every = int(conf.get("sample_every_n_epochs", 0) or 0)
        if conf.get("sample_prompts") and every and epoch % every == 0:
            write_sample(conf, epoch)
        if save_every and epoch % save_every == 0 and epoch < epochs:
            path = os.path.join(output_dir, f"{name}-{epoch:06d}.safetensors")
            print(f"\nsaving checkpoint: {path}")
            write_safetensors(path, meta)
    path = os.path.join(output_dir, f"{name}.safetensors")
    print(f"\nsaving checkpoint: {path}")
    write_safetensors(path, meta)
    events.close()
    log("INFO", "model saved.", "train_network.py:1729")
    sys.stderr.write(
        bar("steps", step, total, time.time() - started, f"avr_loss={fmt(average)}") + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
