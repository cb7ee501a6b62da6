"""Draw preview images: the base model with a kohya LoRA file at a chosen weight.

The LoRA is applied the way kohya's networks.lora applies it at inference (each wrapped
module adds up(down(x)) * multiplier * alpha / rank), through the builtin trainer's own
LoRANetwork, so any file it or kohya wrote loads without a conversion step. Weight 0 (or
no file) draws the base model itself.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from kohyagen.errors import ConfigError
from kohyagen.quiet import quiet_third_party

if TYPE_CHECKING:
    from kohyagen.trainer.lora import LoRANetwork

SMALL_UNET = 20_000_000  # parameters; real SD U-Nets have 860M (SD1) to 2.6G (SDXL)


def pick_device() -> tuple[str, Any]:
    """The GPU in half precision when there is one, else the CPU in fp32."""
    import torch

    from kohyagen.trainer.models import cpu_only

    if cpu_only():
        return "cpu", torch.float32
    if torch.cuda.is_available():
        return "cuda", torch.float16
    if torch.backends.mps.is_available():
        return "mps", torch.float16
    return "xpu", torch.float16


class LoraRenderer:
    """Loads the base model once; switches LoRA files and weights between drawings."""

    def __init__(
        self,
        base_model: str,
        *,
        sdxl: bool,
        v2: bool = False,
        v_parameterization: bool = False,
        sampler: str | None = "euler_a",
        device: str | None = None,
    ) -> None:
        import torch

        from kohyagen.trainer.models import load_components, place_components
        from kohyagen.trainer.sample import build_pipeline

        quiet_third_party()
        args = SimpleNamespace(
            pretrained_model_name_or_path=base_model,
            tokenizer_cache_dir=None,
            v2=v2,
            v_parameterization=v_parameterization,
            vae=None,
        )
        self.components = load_components(args, sdxl=sdxl)
        self.device, dtype = pick_device() if device is None else (device, torch.float32)
        place_components(
            self.components,
            weight_dtype=dtype,
            device=self.device,
            xformers=False,
            gradient_checkpointing=False,
        )
        self.pipe = build_pipeline(
            self.components, sampler, v_prediction=self.components.v_parameterization
        )
        self.network: LoRANetwork | None = None
        self.lora_path: Path | None = None
        params = sum(p.numel() for p in self.components.unet.parameters())
        # A tiny U-Net's ops are too small to split across threads: on a shared CPU the
        # threads only wait on each other (measured 10x slower with two than with one).
        self.threads = 1 if self.device == "cpu" and params < SMALL_UNET else None

    def use_lora(self, path: Path | None) -> None:
        """Wrap the model with the LoRA in path (None: the base model alone)."""
        from kohyagen.trainer.lora import LoRANetwork
        from kohyagen.trainer.lora_weights import dims_from_weights, load_network_weights

        if path == self.lora_path:
            return
        if self.network is not None:
            self.network.restore()
            self.network = None
        self.lora_path = None
        if path is None:
            return
        network = LoRANetwork(
            self.components.unet,
            self.components.text_encoders,
            rank=1,
            alpha=1,
            sdxl=self.components.sdxl,
            dims=dims_from_weights(path),
        )
        load_network_weights(network, path)
        param = next(self.components.unet.parameters())
        network.to(param.device, param.dtype)
        network.eval()
        network.apply_to()
        self.network, self.lora_path = network, path

    def set_weight(self, weight: float) -> None:
        if self.network is None:
            if weight:
                raise ConfigError("a LoRA weight was set but no LoRA file is loaded")
            return
        for mod in [*self.network.text_encoder_loras, *self.network.unet_loras]:
            mod.multiplier = float(weight)

    def draw(
        self, *, prompt: str, negative: str, width: int, height: int, seeds: list[int],
        steps: int, scale: float,
    ) -> list[Any]:  # fmt: skip
        """One PIL image per seed, drawn as one batch. Each seed's noise comes from its own
        generator, so an image does not depend on the batch it was drawn in, and columns
        differ only by the LoRA."""
        import torch

        threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return self._draw_batch(list(seeds), prompt, negative, width, height, steps, scale)
        finally:
            torch.set_num_threads(threads)

    def _draw_batch(self, seeds: list[int], *job: Any) -> list[Any]:
        """Halve the batch on out-of-memory (five SDXL images at once need a big card)."""
        import torch

        try:
            return self._draw(seeds, *job)
        except torch.cuda.OutOfMemoryError:
            if len(seeds) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(seeds) // 2
            return self._draw_batch(seeds[:half], *job) + self._draw_batch(seeds[half:], *job)

    def _draw(
        self, seeds: list[int], prompt: str, negative: str, width: int, height: int, steps: int,
        scale: float,
    ) -> list[Any]:  # fmt: skip
        import torch

        from kohyagen.trainer.sample import decode_latents

        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
        with torch.no_grad():
            latents = self.pipe(
                prompt,
                negative_prompt=negative or None,
                width=max(64, width // 8 * 8),
                height=max(64, height // 8 * 8),
                num_inference_steps=steps,
                guidance_scale=scale,
                num_images_per_prompt=len(seeds),
                generator=generators,
                output_type="latent",
            ).images
            # one at a time: the VAE at full size is the memory peak
            return [decode_latents(self.pipe, self.components, latents[i : i + 1])
                    for i in range(len(seeds))]  # fmt: skip
