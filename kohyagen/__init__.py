"""kohyagen: a folder of images to a trained, well-chosen Stable Diffusion LoRA."""

__version__ = "0.1.0"
