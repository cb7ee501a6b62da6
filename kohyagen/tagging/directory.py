"""WD14 auto-tagging: a folder of images to caption files, through onnxruntime.

tag_directory() is the entry point. Images are loaded and preprocessed in a thread
pool. On an accelerator the pool keeps the next batches ready while onnxruntime runs
the current one (both release the GIL), so the model, not the JPEG decoder, sets the
pace; on the CPU, where onnxruntime already occupies every core, each batch is
loaded on all cores between runs instead (see kohyagen.tagging.loop).
Existing captions are never replaced unless the mode says so, and every caption is
written atomically: a run killed midway leaves each caption old or new, and running
again carries on with the images still uncaptioned. Which images a run takes is
decided by selection.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kohyagen.dataset.captions import normalize_caption_extension
from kohyagen.errors import DatasetError, TaggingError, UsageError
from kohyagen.tagging.captions import MODES, CaptionOptions, TagSelector
from kohyagen.tagging.loop import BatchRun, ImageFailure, ProgressCallback
from kohyagen.tagging.models import DEFAULT_MODEL, ModelFiles, TagSet, load_tags, resolve_model
from kohyagen.tagging.runtime import Runtime, open_runtime
from kohyagen.tagging.selection import select_images
from kohyagen.validate import number_problem, require, trigger_problem

__all__ = ["DEFAULT_MODEL", "ImageFailure", "TagResult", "tag_directory"]
GPU_BATCH = 32
CPU_BATCH = 8


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
    options = _caption_options(
        threshold, character_threshold, trigger, undesired_tags, always_first,
        keep_underscores=keep_underscores, rating=rating,
    )  # fmt: skip
    found, todo, shared, blocked = select_images(root, recursive, caption_ext, mode)
    base: dict[str, Any] = {
        "root": root, "mode": mode, "caption_extension": caption_ext, "images": len(found),
        "skipped": len(found) - len(todo) - len(blocked),
    }  # fmt: skip
    if not todo:
        # Nothing to do, so no model is loaded (or downloaded) at all.
        return TagResult(
            model=str(model), tagged=0, failed=len(blocked), failures=tuple(blocked),
            warnings=tuple(shared),
            seconds=_since(started), **base,
        )  # fmt: skip
    return _run_tagger(
        todo, options, base, model=model, cache_dir=cache_dir, providers=providers,
        batch_size=batch_size, warnings=shared, blocked=blocked, on_message=on_message,
        progress=progress, workers=workers, started=started,
    )  # fmt: skip


def _caption_options(
    threshold: float,
    character_threshold: float,
    trigger: str | None,
    undesired_tags: Sequence[str],
    always_first: Sequence[str],
    *,
    keep_underscores: bool,
    rating: bool,
) -> CaptionOptions:
    """The caption policy, with blank tags and a blank trigger dropped."""
    if trigger and trigger.strip():
        # a comma would split the trigger into two tags, a newline end the caption
        require(trigger_problem(trigger), hint="e.g. --trigger sks")
    return CaptionOptions(
        threshold=threshold,
        character_threshold=character_threshold,
        trigger=trigger.strip() if trigger and trigger.strip() else None,
        undesired_tags=tuple(t.strip() for t in undesired_tags if t.strip()),
        always_first=tuple(t.strip() for t in always_first if t.strip()),
        keep_underscores=keep_underscores,
        rating=rating,
    )


def _load_tagger(
    model: str | Path, cache_dir: str | Path | None, providers: Sequence[str] | None
) -> tuple[ModelFiles, TagSet, Runtime]:
    """The model's files (downloaded when needed), its tag list and an onnxruntime session."""
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
    return files, tags, runtime


def _run_tagger(
    todo: list[Path],
    options: CaptionOptions,
    base: dict[str, Any],
    *,
    model: str | Path,
    cache_dir: str | Path | None,
    providers: Sequence[str] | None,
    batch_size: int | None,
    warnings: list[str],
    blocked: list[ImageFailure],
    on_message: Callable[[str], None] | None,
    progress: ProgressCallback | None,
    workers: int | None,
    started: float,
) -> TagResult:
    """Load the tagger, caption every image in todo, and report."""
    load_started = time.perf_counter()
    files, tags, runtime = _load_tagger(model, cache_dir, providers)
    load_seconds = _since(load_started)
    warnings = list(runtime.warnings) + warnings
    rows = _batch_size(runtime, batch_size, warnings)
    if on_message is not None:
        on_message(f"tagger {files.name} on {runtime.provider}, batches of {rows}")
        for warning in warnings:
            on_message(f"warning: {warning}")
    if progress is not None:
        # Only now: a download's own progress output has finished by this point.
        progress(0, len(todo))
    mode, caption_ext = base["mode"], base["caption_extension"]
    run = BatchRun(runtime, TagSelector(tags, options), options, mode, caption_ext, rows, progress)
    run.tag(todo, workers or min(8, os.cpu_count() or 2))
    failures = blocked + run.failures
    return TagResult(
        model=files.name,
        tagged=run.tagged,
        failed=len(failures),
        failures=tuple(failures),
        tag_counts=dict(sorted(run.counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        provider=runtime.provider,
        batch_size=rows,
        input_size=runtime.input.size,
        warnings=tuple(warnings),
        seconds=_since(started),
        load_seconds=load_seconds,
        **base,
    )


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
        # a score is a probability: above 1 would tag nothing, NaN compares false
        require(number_problem(value, f"the {name}", low=0, high=1), hint="e.g. 0.35")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"the batch size must be at least 1, got {batch_size}")
    return normalize_caption_extension(caption_ext)


def _since(started: float) -> float:
    return time.perf_counter() - started
