"""kohyagen's builtin LoRA trainer: kohya's config contract, outputs and file formats.

Entry: `python -m kohyagen.trainer --config_file X --dataset_config Y [--resume DIR]`.
Needs the [train] extra; nothing heavy is imported here.
"""
