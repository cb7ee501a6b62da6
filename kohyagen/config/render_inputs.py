"""What a render starts from: the kohya train dir, the LoRA name, the base model."""

from __future__ import annotations

import os
import re
import shlex
import unicodedata
from pathlib import Path

from kohyagen.config.presets import ModelPreset
from kohyagen.dataset.layout import TrainDirLayout, parse_folder_name, scan_train_dir
from kohyagen.errors import DatasetError, ModelNotFound
from kohyagen.validate import NAME_BYTES, name_problem, require, trigger_problem

MODEL_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".sft")


def load_train_dir(dataset: str | Path) -> TrainDirLayout:
    """A kohya train dir (parent of N_name/ folders) with at least one image."""
    # resolved once here: the rendered configs hold absolute paths, since kohya resolves
    # relative ones against wherever it is launched from
    root = Path(dataset).expanduser().resolve()
    layout = scan_train_dir(root)
    if not layout.subsets:
        # the usual slip: the 10_sks/ folder itself instead of the folder that holds it
        if layout.loose_images and parse_folder_name(root.name):
            raise DatasetError(
                "this is a subset folder; kohya needs its parent (the folder holding N_name/)",
                path=root,
                hint=f"pass {root.parent}",
            )
        if layout.loose_images:
            raise DatasetError(
                "a plain folder of images, not a kohya train dir with N_name/ folders",
                path=root,
                hint=f"run `kohyagen dataset prepare {shlex.quote(str(root))} -o OUT --concept NAME` "
                "first, "
                "then pass OUT",
            )
        raise DatasetError(
            "no N_name/ folders with images (kohya would find no data)",
            path=root,
            hint="pass the folder that holds e.g. 10_sks/, or run `kohyagen dataset prepare`",
        )
    # kohya would log `No data found` and exit 0 without training
    if layout.image_count == 0:
        raise DatasetError(
            "the N_name/ folders hold no images kohya can read",
            path=root,
            hint="kohya reads .png .jpg .jpeg .webp .bmp",
        )
    return layout


def _safe_name(text: str) -> str:
    # "Ünïcode" -> "Unicode", not "n_code": accents are split off, then dropped
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    # the name becomes kohya's output_name, a file name on every OS and in A1111's LoRA menu
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", text.strip()).strip("_")
    return name or "lora"


def clean_trigger(trigger: str | None) -> str | None:
    """The trigger stripped (None when blank); UsageError for one run and tag refuse: a
    newline would split sample_prompts.txt, a comma make two tags of it."""
    trigger = (trigger or "").strip() or None
    if trigger is not None:
        require(trigger_problem(trigger), hint="e.g. --trigger sks")
    return trigger


def default_name(layout: TrainDirLayout, name: str | None = None) -> str:
    """The LoRA name: as given, else the first folder's class tokens, else the folder name."""
    if name is not None:
        # what the user typed is refused, not silently rewritten into another name
        require(name_problem(name, "--name"), hint="e.g. --name my_style")
    # the first folder's class tokens (`sks` of 10_sks) usually name the subject
    tokens = next((s.class_tokens for s in layout.subsets if s.class_tokens), "")
    # folder-derived names are made safe; kept short so kohya's suffixes still fit
    return _safe_name(name or tokens or layout.root.name)[:NAME_BYTES]


def resolve_base_model(base_model: str | None, model: ModelPreset, cwd: Path) -> tuple[str, str]:
    if base_model is None:
        return model.default_base_model, "the preset's default base model (a Hugging Face id)"
    text = os.path.expanduser(base_model)
    path = Path(text) if Path(text).is_absolute() else cwd / text
    if path.exists():
        return str(path.resolve()), "the base model given (absolute, so kohya finds it anywhere)"
    # Not on disk: fine for a Hub id (kohya downloads it), but a path-shaped name that is
    # missing would only fail after kohya has started.
    looks_local = (
        text.startswith((".", "/", "~"))
        or text.lower().endswith(MODEL_FILE_SUFFIXES)
        or text.count("/") != 1
        or "\\" in text
    )
    if looks_local:
        raise ModelNotFound(
            "base model not found",
            path=path,
            hint="give a .safetensors/.ckpt file, a diffusers folder, or a Hugging Face id "
            "like owner/name",
        )
    return text, "the Hugging Face model id given (kohya downloads it on first use)"
