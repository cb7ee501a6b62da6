"""kohyagen's builtin LoRA trainer: kohya's config contract, outputs and file formats.

Entry: `python -m kohyagen.trainer --config_file X --dataset_config Y [--resume DIR]`.
Needs the [train] extra; nothing heavy is imported here.
A run is one `train.LoRARecipe`: its setup phases (accelerator and logging, datasets,
models, network, data and latents, optimizer and schedule) live in `setup.py`, its loop
(one step; at epoch end validation, saving, samples) in `train.py`.
"""
