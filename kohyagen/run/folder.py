"""The run folder a `kohyagen run` works in: a fresh one, one to continue, one to restart.

Opening the folder decides whether an invocation may go on with what is there: the same
inputs and the same images continue, other ones are refused, a folder moved from another
place or machine has its recorded paths rewritten, and --restart moves the run's own
files aside under previous/. It is separate from the pipeline because none of it runs a
stage: it only answers "which manifest, and is it a fresh run".
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

from kohyagen.errors import RunStateError
from kohyagen.run.context import RunOptions, local_or_repo
from kohyagen.run.dataset_hash import DatasetHash, describe_change, hash_dataset
from kohyagen.run.manifest import Manifest

# Inputs that define what a run produces: a run dir continued with other values for
# these would mix two different runs, so it is refused (see RunOptions.identity in
# kohyagen.run.context).
IDENTITY_KEYS = (
    "images",
    "name",
    "trigger",
    "model",
    "base_model",
    "epochs",
    "overrides",
    "seed",
    "model_files",
)


def open_run_dir(options: RunOptions, notes: list[str]) -> tuple[Manifest, bool]:
    """The manifest to work on, and whether it is a fresh run (notes get what to tell)."""
    run_dir = options.resolved_run_dir()
    try:
        existing = Manifest.load(run_dir)
        damaged = False
    except RunStateError:
        if not options.restart:
            raise
        existing, damaged = None, True  # --restart always works, even on a broken manifest
    left: set[str] = {"previous"}
    if options.restart and (existing is not None or damaged):
        left |= _move_aside(run_dir, Path(options.images).resolve())
        existing = None
    if existing is None:
        if run_dir.exists() and any(p.name not in left for p in run_dir.iterdir()):
            raise RunStateError(
                "the run folder exists, is not empty and is not a kohyagen run",
                path=run_dir,
                hint="pass another --run-dir (nothing in it was changed)",
            )
        return Manifest.create(run_dir, inputs=options.to_inputs()), True
    _follow_moves(existing, options, run_dir, notes)
    _check_same_inputs(existing, options, run_dir, notes)
    inputs = existing.data["inputs"]
    for key in ("gpu", "budget", "backend", "price_per_hour"):
        inputs[key] = options.to_inputs()[key]
    existing.save()
    return existing, False


def _check_same_inputs(
    existing: Manifest, options: RunOptions, run_dir: Path, notes: list[str]
) -> None:
    """Refuse to continue a run with other inputs or changed images; note an edited
    prepared copy (allowed: captions are often fixed by hand after --prepare-only)."""
    old = {k: existing.data.get("inputs", {}).get(k) for k in IDENTITY_KEYS}
    new = options.identity()
    differ = [k for k in IDENTITY_KEYS if old.get(k) != new[k]]
    if differ:
        detail = ", ".join(f"{k}: {old.get(k)!r} → {new[k]!r}" for k in differ)
        raise RunStateError(
            f"this run folder was started with other inputs ({detail})",
            path=run_dir,
            hint="pass --restart to start it over (the old files are kept under previous/), "
            "or another --run-dir",
        )
    recorded = existing.data.get("dataset", {}).get("source")
    if recorded and existing.is_finished("check"):
        now = hash_dataset(options.images, exclude=run_dir)
        before = DatasetHash.from_dict(recorded)
        if now.digest != before.digest:
            raise RunStateError(
                f"the images changed since this run checked them: {describe_change(before, now)}",
                path=options.images,
                hint="pass --restart to train on the new images from the start (the old "
                "run is kept under previous/), or restore the images to continue",
            )
    copy = existing.data.get("dataset", {}).get("training_data")
    train_dir = existing.outputs("prepare").get("train_dir")
    if copy and train_dir and not existing.is_finished("train") and Path(train_dir).is_dir():
        before, now = DatasetHash.from_dict(copy), hash_dataset(train_dir)
        if now.digest != before.digest:
            # Editing captions in the prepared copy (e.g. after --prepare-only) is allowed.
            notes.append(
                f"the prepared copy in {train_dir} changed since it was made "
                f"({describe_change(before, now)}): training uses it as it is now"
            )
            existing.update("dataset", training_data=now.to_dict())


def _follow_moves(manifest: Manifest, options: RunOptions, run_dir: Path, notes: list) -> None:
    """A run folder copied to another place (or machine), or its images passed from
    another folder with the same content: rewrite the recorded paths to the new ones."""
    from kohyagen.run.relocate import relocate

    moves: list[tuple[str, str]] = []
    made_in = manifest.data.get("run_dir")
    if made_in and made_in != str(run_dir):
        moves.append((made_in, str(run_dir)))
    old_images = manifest.data.get("inputs", {}).get("images")
    new_images = str(Path(options.images).resolve())
    recorded = manifest.data.get("dataset", {}).get("source")
    moved_images = (
        old_images
        and old_images != new_images
        and recorded
        and manifest.is_finished("check")
        and Path(new_images).is_dir()
        and hash_dataset(new_images, exclude=run_dir).digest == recorded.get("digest")
    )
    if moved_images:
        moves.append((old_images, new_images))
    old_model = manifest.data.get("inputs", {}).get("base_model")
    new_model = local_or_repo(options.base_model)
    moved_model = (
        old_model
        and new_model
        and old_model != new_model
        and Path(old_model).is_absolute()
        and not Path(old_model).exists()  # it was a local file on the other machine
        and Path(new_model).exists()
        and Path(old_model).name == Path(new_model).name
    )
    if moved_model and new_model:
        moves.append((old_model, new_model))
    if not moves:
        return
    relocate(manifest, moves)
    manifest.data["run_dir"] = str(run_dir)
    manifest.save()
    notes.append(
        "paths updated in kohyagen.json and the configs: "
        + "; ".join(f"{old} → {new}" for old, new in moves)
    )


# What a run writes in its folder; --restart moves only these aside (train-N.log are
# earlier logs kept by the launcher, dot-names kohyagen's temp files).
OWN_ENTRIES = frozenset({
    "kohyagen.json", "training_data", "training_config.toml", "dataset_config.toml",
    "sample_prompts.txt", "train.log", "train.json", "attempts", "logs", "output",
    "summary.json", "summary.md", "loss.png", "report.html", "queue.log",
})  # fmt: skip


def _is_own(entry: Path) -> bool:
    name = entry.name
    if name in OWN_ENTRIES or (name.startswith("train-") and name.endswith(".log")):
        return True
    return name.startswith(".") and (name.endswith(".tmp") or ".kohyagen-tmp" in name)


def _move_aside(run_dir: Path, images: Path) -> set[str]:
    """Move the run's own files under previous/<time>/; return the names left in place:
    the images (when the user keeps them in the run folder) and anything not kohyagen's."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = run_dir / "previous" / stamp
    target.mkdir(parents=True)
    left = set()
    for entry in list(run_dir.iterdir()):
        if entry.name == "previous":
            continue
        holds_images = images == entry.resolve() or entry.resolve() in images.parents
        if holds_images or not _is_own(entry):
            left.add(entry.name)
            continue
        shutil.move(str(entry), str(target / entry.name))
    return left
