"""Sample images during training from a sample_prompts file, named as kohya names them.

Prompt lines (.txt) take kohya's inline options: --n negative prompt, --w width,
--h height, --d seed, --l CFG scale, --s steps. Lines starting with # are skipped.
Files go to output_dir/sample/<name>_<e000001|000010>_<NN>_<YYYYmmddHHMMSS>[_<seed>].png.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kohyagen.errors import ConfigError

_SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "k_euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "k_euler_a": "EulerAncestralDiscreteScheduler",
    "dpmsolver": "DPMSolverMultistepScheduler",
    "dpmsolver++": "DPMSolverMultistepScheduler",
    "dpmsingle": "DPMSolverSinglestepScheduler",
    "heun": "HeunDiscreteScheduler",
    "k_dpm_2": "KDPM2DiscreteScheduler",
    "k_dpm_2_a": "KDPM2AncestralDiscreteScheduler",
}


@dataclass(frozen=True)
class SamplePrompt:
    index: int
    prompt: str
    negative: str = ""
    width: int = 512
    height: int = 512
    seed: int | None = None
    scale: float = 7.5
    steps: int = 30


def parse_prompt_line(line: str, index: int) -> SamplePrompt:
    parts = re.split(r"\s+--", " " + line.strip())
    prompt = parts[0].strip()
    opts: dict = {}
    for part in parts[1:]:
        key, _, value = part.partition(" ")
        value = value.strip()
        try:
            if key == "n":
                opts["negative"] = value
            elif key == "w":
                opts["width"] = int(value)
            elif key == "h":
                opts["height"] = int(value)
            elif key == "d":
                opts["seed"] = int(value)
            elif key == "l":
                opts["scale"] = float(value)
            elif key == "s":
                opts["steps"] = int(value)
        except ValueError as exc:
            raise ConfigError(
                f"sample prompt option --{key} {value!r} is not a number",
                hint="fix that line of sample_prompts",
            ) from exc
    return SamplePrompt(index, prompt, **opts)


def read_prompts(path: str | Path) -> list[SamplePrompt]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("sample_prompts file not found", path=path, hint="check the path")
    if path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        return [
            SamplePrompt(
                i,
                r.get("prompt", ""),
                r.get("negative_prompt", ""),
                int(r.get("width", 512)),
                int(r.get("height", 512)),
                r.get("seed"),
                float(r.get("scale", 7.5)),
                int(r.get("sample_steps", 30)),
            )
            for i, r in enumerate(rows)
        ]
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.lstrip().startswith("#")]
    return [parse_prompt_line(line, i) for i, line in enumerate(lines)]


def sample_filename(name: str | None, *, epoch: int | None, step: int, index: int, seed) -> str:
    num = f"e{epoch:06d}" if epoch is not None else f"{step:06d}"
    seed_part = "" if seed is None else f"_{seed}"
    prefix = "" if name is None else name + "_"
    return f"{prefix}{num}_{index:02d}_{time.strftime('%Y%m%d%H%M%S')}{seed_part}.png"


def sample_images(
    components: Any,
    args: Any,
    out_dir: Path,
    *,
    epoch: int | None,
    step: int,
    device: Any,
    v_prediction: bool,
) -> list[Path]:
    """Draw every sample prompt with the LoRA applied; the written PNG files."""
    import torch

    prompts = read_prompts(args.sample_prompts)
    pipe = _make_pipeline(components, args, v_prediction=v_prediction)
    pipe.set_progress_bar_config(disable=True)
    unet_device = next(components.unet.parameters()).device
    # Caching may have parked the text encoders and the VAE on the CPU; the pipeline
    # needs every part on one device while it draws.
    parked = [*components.text_encoders, components.vae]
    parked_devices = [next(m.parameters()).device for m in parked]
    for module in parked:
        module.to(unet_device)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rng_state = torch.get_rng_state()
    try:
        for p in prompts:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(p.seed if p.seed is not None else torch.seed() % 2**32)
            with torch.no_grad():
                latents = pipe(
                    p.prompt,
                    negative_prompt=p.negative or None,
                    width=max(64, p.width // 8 * 8),
                    height=max(64, p.height // 8 * 8),
                    num_inference_steps=p.steps,
                    guidance_scale=p.scale,
                    generator=gen,
                    output_type="latent",
                ).images
                image = _decode(pipe, components, latents)
            path = out_dir / sample_filename(
                args.output_name, epoch=epoch, step=step, index=p.index, seed=p.seed
            )
            image.save(path)
            written.append(path)
    finally:
        torch.set_rng_state(rng_state)
        for module, dev in zip(parked, parked_devices, strict=True):
            module.to(dev)
    return written


def _make_pipeline(components: Any, args: Any, *, v_prediction: bool) -> Any:
    """A diffusers pipeline around the training models, with kohya's sample scheduler."""
    import diffusers

    cls_name = _SCHEDULERS.get(args.sample_sampler or "ddim", "DDIMScheduler")
    scheduler = getattr(diffusers, cls_name)(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction" if v_prediction else "epsilon",
    )
    common = {
        "vae": components.vae,
        "text_encoder": components.text_encoders[0],
        "tokenizer": components.tokenizers[0],
        "unet": components.unet,
        "scheduler": scheduler,
    }
    if components.sdxl:
        pipe = diffusers.StableDiffusionXLPipeline(
            **common,
            text_encoder_2=components.text_encoders[1],
            tokenizer_2=components.tokenizers[1],
        )
    else:
        pipe = diffusers.StableDiffusionPipeline(
            **common, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    return pipe


def _decode(pipe, components, latents):
    """Decode in the VAE's own dtype (fp32 here): a bf16/fp16 U-Net's latents would not fit it,
    and SDXL's VAE overflows in fp16."""
    import torch

    vae = components.vae
    param = next(vae.parameters())
    latents = latents.to(param.device, param.dtype) / components.scaling_factor
    with torch.no_grad():
        decoded = vae.decode(latents).sample
    return pipe.image_processor.postprocess(decoded.float(), output_type="pil")[0]
