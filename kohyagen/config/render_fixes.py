"""Consequences of `--set` that keep a rendered pair runnable by real kohya.

`kohyagen config` never writes what lint calls an error. Where one value the user set
makes another rendered value crash kohya, the other one follows, with a comment that
says why: the user's value is kept, the rendered default gives way.
"""

from __future__ import annotations

from pathlib import Path

import tomlkit

from kohyagen.config.lint_buckets import bucket_settings_of
from kohyagen.config.lint_rules import RENAMED_IN_DATASET
from kohyagen.config.overrides import TRAINING, Override
from kohyagen.dataset.buckets import kohya_bucket_fails
from kohyagen.dataset.layout import TrainDirLayout
from kohyagen.toml_compat import tomllib


def coupled_overrides(parsed: list[Override]) -> list[Override]:
    """Values that must follow the user's --set for kohya to run."""
    given = {ov.key: ov for ov in parsed if ov.target == TRAINING}
    out = []
    workers = given.get("max_data_loader_n_workers")
    if workers is not None and workers.value == 0 and "persistent_data_loader_workers" not in given:
        # torch's DataLoader raises ValueError for persistent_workers with num_workers = 0
        out.append(Override(TRAINING, "persistent_data_loader_workers", False, workers.text,
                            comment=f"off because of --set {workers.text}: persistent workers "
                            "need max_data_loader_n_workers > 0 (torch raises ValueError)"))  # fmt: skip
    return out


def _image_sizes(paths: list[Path]) -> list[tuple[str, int, int]]:
    from PIL import Image

    sizes = []
    for path in paths:
        try:
            with Image.open(path) as im:
                sizes.append((path.name, *im.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # dataset check names unreadable images
    return sizes


def allow_upscale_if_needed(
    training_text: str,
    dataset_text: str,
    layout: TrainDirLayout,
    parsed: list[Override],
    notes: list[str],
) -> str:
    """bucket_no_upscale = false when an image would get a 0-pixel bucket side with it.

    kohya's select_bucket divides by a bucket side rounded down to bucket_reso_steps
    (ZeroDivisionError); upscaling such an image into the regular buckets is what
    kohya can train. Left alone when the user set bucket_no_upscale.
    """
    if any(ov.key == "bucket_no_upscale" for ov in parsed):
        return dataset_text
    training = tomllib.loads(training_text)
    flat = {k: v for t in training.values() if isinstance(t, dict) for k, v in t.items()}
    flat.update({k: v for k, v in training.items() if not isinstance(v, dict)})
    doc = tomlkit.parse(dataset_text)
    general = doc.get("general")
    if general is None:
        return dataset_text
    context = {RENAMED_IN_DATASET.get(k, k): v for k, v in flat.items()}
    context.update(general.unwrap())
    settings = bucket_settings_of(context)
    if settings is None or not settings.no_upscale:
        return dataset_text
    images = [img for subset in layout.subsets for img in subset.images]
    bad = [(n, w, h) for n, w, h in _image_sizes(images) if kohya_bucket_fails(w, h, settings)]
    if not bad:
        return dataset_text
    item = tomlkit.item(False)
    item.comment(f"{len(bad)} image(s) such as {bad[0][0]} ({bad[0][1]}x{bad[0][2]}) would get "
                 "a 0-pixel bucket without upscaling (kohya: ZeroDivisionError)")  # fmt: skip
    general["bucket_no_upscale"] = item
    notes.append(f"bucket_no_upscale = false: {len(bad)} image(s) are too small for their "
                 f"bucket at resolution {settings.resolution[0]} (e.g. {bad[0][0]}, "
                 f"{bad[0][1]}x{bad[0][2]}); kohya would stop on them without upscaling")  # fmt: skip
    return tomlkit.dumps(doc)
