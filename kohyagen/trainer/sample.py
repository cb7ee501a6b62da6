"""Sample images during training from a sample_prompts file, named as kohya names them.

Prompt lines (.txt) take kohya's inline options: --n negative prompt, --w width,
--h height, --d seed, --l CFG scale, --s steps. Lines starting with # are skipped.
Files go to output_dir/sample/<name>_<e000001|000010>_<NN>_<YYYYmmddHHMMSS>[_<seed>].png.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from kohyagen.config.sample_prompts import (  # noqa: F401  (parse_prompt_line: the trainer's API)
    SamplePrompt,
    parse_prompt_line,
    read_prompts,
)

if TYPE_CHECKING:
    import torch

    from kohyagen.trainer.models import Components

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


def sample_filename(
    name: str | None, *, epoch: int | None, step: int, index: int, seed: int | None
) -> str:
    num = f"e{epoch:06d}" if epoch is not None else f"{step:06d}"
    seed_part = "" if seed is None else f"_{seed}"
    prefix = "" if name is None else name + "_"
    return f"{prefix}{num}_{index:02d}_{time.strftime('%Y%m%d%H%M%S')}{seed_part}.png"


def build_pipeline(components: Components, sampler: str | None, *, v_prediction: bool) -> Any:
    """A diffusers pipeline over the loaded parts with kohya's sample_sampler scheduler
    (kohya builds its samplers with SD's training betas, whatever the model folder says)."""
    import diffusers

    cls_name = _SCHEDULERS.get(sampler or "ddim", "DDIMScheduler")
    scheduler = getattr(diffusers, cls_name)(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction" if v_prediction else "epsilon",
        # StableDiffusionPipeline forces 1 anyway (with a deprecation warning); the SDXL
        # pipeline keeps the scheduler's own 0
        steps_offset=0 if components.sdxl else 1,
    )
    common = {
        "vae": components.vae,
        "text_encoder": components.text_encoders[0],
        "tokenizer": components.tokenizers[0],
        "unet": components.unet,
        "scheduler": scheduler,
    }
    if components.sdxl:
        # Any: diffusers' pipeline classes do not declare __call__ or their helpers' types
        pipe: Any = diffusers.StableDiffusionXLPipeline(
            **common,
            text_encoder_2=components.text_encoders[1],
            tokenizer_2=components.tokenizers[1],
        )
    else:
        pipe = diffusers.StableDiffusionPipeline(
            **common, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample_images(
    components: Components,
    args: SimpleNamespace,
    out_dir: Path,
    *,
    epoch: int | None,
    step: int,
    device: torch.device | str,
    v_prediction: bool,
) -> list[Path]:
    import torch

    prompts = read_prompts(args.sample_prompts)
    pipe = build_pipeline(components, args.sample_sampler, v_prediction=v_prediction)
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
                image = decode_latents(pipe, components, latents)
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


def decode_latents(pipe: Any, components: Components, latents: torch.Tensor) -> Any:
    """Decode in the VAE's own dtype (fp32 here): a bf16/fp16 U-Net's latents would not fit it,
    and SDXL's VAE overflows in fp16."""
    import torch

    vae = components.vae
    param = next(vae.parameters())
    latents = latents.to(param.device, param.dtype) / components.scaling_factor
    with torch.no_grad():
        decoded = vae.decode(latents).sample
    return pipe.image_processor.postprocess(decoded.float(), output_type="pil")[0]
