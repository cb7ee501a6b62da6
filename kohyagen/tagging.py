"""WD14 auto-tagging: a folder of images to caption files, through onnxruntime.

tag_directory() is the entry point. Images are loaded and preprocessed in a thread
pool that keeps the next batches ready while onnxruntime runs the current one (both
release the GIL), so on a GPU the model, not the JPEG decoder, sets the pace.
Existing captions are never replaced unless the mode says so, and every caption is
written atomically: a run killed midway leaves each caption old or new, and running
again carries on with the images still uncaptioned.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kohyagen.errors import DatasetError, TaggingError, UsageError
from kohyagen.layout import is_image_name
from kohyagen.tagging_captions import (
    MODES,
    CaptionOptions,
    TagSelector,
    caption_text,
    has_caption,
    merge_tags,
    read_caption,
    remove_stale_temps,
    split_tags,
    write_atomic,
)
from kohyagen.tagging_image import prepare_into
from kohyagen.tagging_models import DEFAULT_MODEL, load_tags, resolve_model
from kohyagen.tagging_runtime import Runtime, open_runtime

ProgressCallback = Callable[[int, int], None]
GPU_BATCH = 32
CPU_BATCH = 8
# Batches prepared ahead of the one running on an accelerator: enough to hide a slow
# decode, few enough to bound memory (a 32 x 448 x 448 x 3 float batch is 77 MB).
PREFETCH_BATCHES = 2
# On the CPU provider onnxruntime already uses every core, so loading alongside it
# only preempts its threads, and each preemption stalls the others at the next
# barrier: measured ~20% slower than loading each batch (on all cores) between runs.
CPU_PREFETCH_BATCHES = 0


@dataclass(frozen=True)
class ImageFailure:
    path: Path
    reason: str


@dataclass(frozen=True)
class TagResult:
    """What a tagging run did. tag_counts is sorted by descending count."""

    root: Path
    model: str
    mode: str
    caption_extension: str
    images: int
    tagged: int
    skipped: int
    failed: int
    failures: tuple[ImageFailure, ...] = ()
    tag_counts: dict[str, int] = field(default_factory=dict)
    provider: str | None = None  # None when nothing needed tagging
    batch_size: int | None = None
    input_size: int | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0  # the whole call
    load_seconds: float = 0.0  # of which finding and loading the model

    @property
    def images_per_second(self) -> float:
        done = self.tagged + self.failed
        return done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["root"] = str(self.root)
        data["failures"] = [{"path": str(f.path), "reason": f.reason} for f in self.failures]
        data["warnings"] = list(self.warnings)
        data["images_per_second"] = round(self.images_per_second, 3)
        data["seconds"] = round(self.seconds, 3)
        data["load_seconds"] = round(self.load_seconds, 3)
        return data


def tag_directory(
    path: str | Path,
    *,
    model: str | Path = DEFAULT_MODEL,
    threshold: float = 0.35,
    character_threshold: float = 0.85,
    trigger: str | None = None,
    undesired_tags: Sequence[str] = (),
    always_first: Sequence[str] = (),
    keep_underscores: bool = False,
    rating: bool = False,
    caption_ext: str = ".txt",
    mode: str = "skip",
    batch_size: int | None = None,
    recursive: bool = False,
    progress: ProgressCallback | None = None,
    providers: Sequence[str] | None = None,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    on_message: Callable[[str], None] | None = None,
) -> TagResult:
    """Caption every image in path with a WD14 tagger.

    mode: "skip" leaves images that have a caption alone (and so resumes a killed
    run), "append" adds the tags a caption lacks, "overwrite" replaces captions.
    progress(done, total) is called once the model is loaded and then as images
    finish; total counts only the images that need tagging. providers forces onnxruntime execution providers ("cpu",
    "cuda", ...); by default the fastest available one is used. on_message gets the
    provider and any warnings as soon as the model is loaded (they are also in the
    result), so that a front end can show them before a long run.
    """
    started = time.perf_counter()
    root = Path(path)
    caption_ext = _check_arguments(
        root, mode, threshold, character_threshold, batch_size, caption_ext
    )
    options = CaptionOptions(
        threshold=threshold,
        character_threshold=character_threshold,
        trigger=trigger.strip() if trigger and trigger.strip() else None,
        undesired_tags=tuple(t.strip() for t in undesired_tags if t.strip()),
        always_first=tuple(t.strip() for t in always_first if t.strip()),
        keep_underscores=keep_underscores,
        rating=rating,
    )
    found = find_images(root, recursive=recursive)
    remove_stale_temps({p.parent for p in found})
    images, shared = _one_image_per_caption(found, caption_ext)
    todo = [p for p in images if mode != "skip" or not has_caption(_caption_path(p, caption_ext))]
    base = {
        "root": root,
        "mode": mode,
        "caption_extension": caption_ext,
        "images": len(found),
        "skipped": len(found) - len(todo),
    }
    if not todo:
        # Nothing to do, so no model is loaded (or downloaded) at all.
        return TagResult(
            model=str(model),
            tagged=0,
            failed=0,
            warnings=tuple(shared),
            seconds=_since(started),
            **base,
        )

    load_started = time.perf_counter()
    files = resolve_model(model, cache_dir=cache_dir)
    tags = load_tags(files.tags_path)
    runtime = open_runtime(files.model_path, providers)
    spec = runtime.input
    if spec.output_count is not None and spec.output_count != len(tags):
        raise TaggingError(
            f"the model gives {spec.output_count} scores but its tag list has {len(tags)} rows",
            path=files.tags_path,
            hint="model.onnx and selected_tags.csv must come from the same tagger",
        )
    load_seconds = _since(load_started)
    warnings = list(runtime.warnings) + shared
    rows = _batch_size(runtime, batch_size, warnings)
    if on_message is not None:
        on_message(f"tagger {files.name} on {runtime.provider}, batches of {rows}")
        for warning in warnings:
            on_message(f"warning: {warning}")
    if progress is not None:
        # Only now: a download's own progress output has finished by this point.
        progress(0, len(todo))

    run = _Run(runtime, TagSelector(tags, options), options, mode, caption_ext, rows, progress)
    run.tag(todo, workers or min(8, os.cpu_count() or 2))
    return TagResult(
        model=files.name,
        tagged=run.tagged,
        failed=len(run.failures),
        failures=tuple(run.failures),
        tag_counts=dict(sorted(run.counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        provider=runtime.provider,
        batch_size=rows,
        input_size=spec.size,
        warnings=tuple(warnings),
        seconds=_since(started),
        load_seconds=load_seconds,
        **base,
    )


def find_images(root: Path, *, recursive: bool = False) -> list[Path]:
    """Images in root (and below, when recursive), hidden folders excluded, sorted."""
    if recursive:
        found = [
            p
            for p in root.rglob("*")
            if is_image_name(p)
            and not any(part.startswith(".") for part in p.relative_to(root).parts[:-1])
            and p.is_file()
        ]
    else:
        found = [p for p in root.iterdir() if is_image_name(p) and p.is_file()]
    if not found:
        hint = "pass the folder that holds the images"
        if not recursive and any(p.is_dir() for p in root.iterdir()):
            hint = "the images may be in subfolders: add --recursive"
        raise DatasetError("no images found", path=root, hint=hint)
    return sorted(found)


class _Run:
    """One pass over the images: a prefetching loader feeding batched inference."""

    def __init__(
        self,
        runtime: Runtime,
        selector: TagSelector,
        options: CaptionOptions,
        mode: str,
        caption_ext: str,
        rows: int,
        progress: ProgressCallback | None,
    ) -> None:
        self.runtime = runtime
        self.selector = selector
        self.options = options
        self.mode = mode
        self.caption_ext = caption_ext
        self.rows = rows
        self.progress = progress
        self.tagged = 0
        self.failures: list[ImageFailure] = []
        self.counts: Counter[str] = Counter()

    def tag(self, todo: list[Path], workers: int) -> None:
        batches = [todo[i : i + self.rows] for i in range(0, len(todo), self.rows)]
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kohyagen-tag")
        pending: deque[tuple[list[Path], np.ndarray, list[Future]]] = deque()
        ahead = CPU_PREFETCH_BATCHES if self.runtime.provider == "CPU" else PREFETCH_BATCHES
        submitted = 0
        done = 0
        try:
            for _ in batches:
                while submitted < len(batches) and len(pending) <= ahead:
                    pending.append(self._submit(pool, batches[submitted]))
                    submitted += 1
                paths, batch, futures = pending.popleft()
                self._finish(paths, batch, [f.result() for f in futures])
                done += len(paths)
                if self.progress is not None:
                    self.progress(done, len(todo))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, pool: ThreadPoolExecutor, paths: list[Path]):
        spec = self.runtime.input
        fixed = spec.fixed_batch
        batch = np.empty(spec.batch_shape(fixed or len(paths)), dtype=spec.dtype)
        if fixed and fixed > len(paths):
            batch[len(paths) :] = 255.0
        futures = [
            pool.submit(prepare_into, batch, row, p, spec.size, spec.layout)
            for row, p in enumerate(paths)
        ]
        return paths, batch, futures

    def _finish(self, paths: list[Path], batch: np.ndarray, errors: list[str | None]) -> None:
        ok = [i for i, err in enumerate(errors) if err is None]
        for path, err in zip(paths, errors, strict=True):
            if err is not None:
                self.failures.append(ImageFailure(path, f"cannot read image: {err}"))
        if not ok:
            return
        compacted = False
        if len(ok) < len(paths):
            if self.runtime.input.fixed_batch:
                batch[[i for i, e in enumerate(errors) if e is not None]] = 255.0
            else:
                batch, compacted = batch[ok], True
        try:
            probs = self.runtime.run(batch)
        except Exception as exc:  # onnxruntime's errors are untyped
            raise TaggingError(
                f"inference failed on a batch of {len(batch)}: {str(exc).splitlines()[0]}",
                hint="a smaller --batch-size may fit in memory",
            ) from exc
        if probs.ndim != 2 or probs.shape[1] != len(self.selector.display):
            raise TaggingError(
                f"the model gives scores of shape {list(probs.shape)} but its tag list has "
                f"{len(self.selector.display)} rows",
                hint="model.onnx and selected_tags.csv must come from the same tagger",
            )
        for k, row in enumerate(ok):
            self._write(paths[row], self.selector.select(probs[k if compacted else row]))

    def _write(self, image: Path, tags: list[str]) -> None:
        target = _caption_path(image, self.caption_ext)
        try:
            if self.mode == "append":
                existing = read_caption(target)
                if existing is not None:
                    tags = merge_tags(split_tags(existing), tags, self.options.trigger)
            write_atomic(target, caption_text(tags))
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            self.failures.append(ImageFailure(image, f"cannot write {target.name}: {reason}"))
            return
        self.tagged += 1
        trigger = self.options.trigger
        self.counts.update(t for t in tags if t != trigger)


def _one_image_per_caption(images: list[Path], extension: str) -> tuple[list[Path], list[str]]:
    """a.png and a.jpg would write the same a.txt: tag the first, warn about the rest."""
    owner: dict[Path, Path] = {}
    kept: list[Path] = []
    clashes: list[str] = []
    for image in images:
        caption = _caption_path(image, extension)
        if caption in owner:
            clashes.append(f"{image.name} shares {caption.name} with {owner[caption].name}")
            continue
        owner[caption] = image
        kept.append(image)
    warnings = []
    if clashes:
        warnings.append(
            f"{len(clashes)} image(s) not tagged because another image has the same name "
            f"and so the same caption file ({clashes[0]}); rename them so kohya can tell "
            "their captions apart"
        )
    return kept, warnings


def _caption_path(image: Path, extension: str) -> Path:
    return image.with_suffix(extension)


def _batch_size(runtime: Runtime, requested: int | None, warnings: list[str]) -> int:
    fixed = runtime.input.fixed_batch
    if fixed:
        if requested and requested != fixed:
            warnings.append(
                f"the model only takes batches of {fixed}; --batch-size {requested} ignored"
            )
        return fixed
    if requested:
        return requested
    return CPU_BATCH if runtime.provider == "CPU" else GPU_BATCH


def _check_arguments(
    root: Path,
    mode: str,
    threshold: float,
    character_threshold: float,
    batch_size: int | None,
    caption_ext: str,
) -> str:
    if not root.exists():
        raise DatasetError("folder not found", path=root, hint="check the path")
    if not root.is_dir():
        raise DatasetError("expected a folder of images", path=root, hint="pass its folder")
    if mode not in MODES:
        raise UsageError(f"unknown caption mode '{mode}'", hint="use one of " + ", ".join(MODES))
    for name, value in (("threshold", threshold), ("character threshold", character_threshold)):
        if not value >= 0:  # also catches NaN
            raise UsageError(f"the {name} must be 0 or more, got {value}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"the batch size must be at least 1, got {batch_size}")
    caption_ext = caption_ext.strip()
    if not caption_ext.startswith("."):
        caption_ext = "." + caption_ext
    if caption_ext == "." or is_image_name(Path("x" + caption_ext)):
        raise UsageError(
            f"'{caption_ext}' cannot be a caption extension", hint="use .txt or .caption"
        )
    return caption_ext


def _since(started: float) -> float:
    return time.perf_counter() - started
