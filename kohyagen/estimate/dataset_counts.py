"""What a dataset folder holds for an estimate: images, images x repeats and, for a kohya
N_name/ layout, the bucket-aware steps per epoch.

Separate from plan.py because it reads a folder (through the dataset check) while the
estimate itself is arithmetic on counts; `kohyagen estimate DATASET` calls both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetCounts:
    images: int
    images_x_repeats: int
    steps_per_epoch: int | None  # bucket-aware when the dataset check provides it
    kind: str  # "train_dir" or "image_folder"


def count_dataset(
    path: str | Path, *, model: str = "sd15", batch_size: int = 1, repeats: int | None = None
) -> DatasetCounts:
    """Images and images x repeats of a dataset folder (kohya N_name/ layout or plain images).

    A plain folder of images counts with `repeats`, by default the repeats `kohyagen run`
    (dataset prepare's "auto") would give it. Raises DatasetError for an unusable folder.
    """
    from kohyagen.dataset.check import check_dataset

    report = check_dataset(path, model=model, batch_size=batch_size)
    # an N_name/ folder's name is its repeats, so only a plain folder needs them chosen
    if report.kind == "train_dir":
        return DatasetCounts(
            report.image_count, report.images_x_repeats, report.steps_per_epoch, report.kind
        )
    if not report.image_count:
        from kohyagen.errors import DatasetError

        raise DatasetError(
            "no images found", path=path, hint="pass a folder of images or of N_name/ folders"
        )
    if repeats is None:
        from kohyagen.dataset.prepare import auto_repeats

        repeats = auto_repeats(report.image_count)
    return DatasetCounts(report.image_count, report.image_count * repeats, None, report.kind)
