"""`preview`: the same prompts drawn with each chosen checkpoint at several LoRA weights.

The guide kohyagen grew from chooses a LoRA by looking: the same prompt at weights 0.5,
0.7, 0.8 and 1.0, five seeds or more (to tell a pattern from chance), the trigger at the
start, middle and end of the prompt, and once with the concept in the negative prompt.
This module plans those images, keeps them in RUN_DIR/preview/ under names that encode
everything that decides their pixels (so an interrupted preview draws only what is
missing and a changed prompt is never served from the cache), and lays them out in grids.
Drawing is delegated to a renderer (kohyagen.trainer.preview, imported only when needed).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kohyagen.config.sample_prompts import FIRST_SEED, SamplePrompt, read_prompts
from kohyagen.config.schema import SCRIPT_MARKER, script_for_config
from kohyagen.errors import ConfigError, UsageError
from kohyagen.report.checkpoints import Checkpoint, rank
from kohyagen.report.preview_jobs import (  # noqa: F401  (the preview's public names)
    DEFAULT_SEEDS,
    DEFAULT_WEIGHTS,
    BaseModel,
    Job,
    PreviewOptions,
    PreviewResult,
)
from kohyagen.report.preview_prompts import PreviewPrompt, preview_prompts
from kohyagen.report.run_data import RunData
from kohyagen.report.run_folder import load_run

PREVIEW_DIR = "preview"
INDEX = "preview.json"
BASE = "base"  # the row/column folder of images drawn without the LoRA


Progress = Callable[[int, int, Job], None]


def select_checkpoints(run: RunData, spec: str) -> tuple[list[Checkpoint], Path | None]:
    """The checkpoints spec names ("best", "all" or epochs "2,4"), and the picked one's path."""
    if not run.checkpoints:
        raise UsageError(
            "this run has no checkpoints to preview", path=run.run_dir,
            hint="train first (`kohyagen train`), or wait for the first saved epoch",
        )  # fmt: skip
    best = rank(run).path
    spec = spec.strip().lower()
    if spec == "best":
        return [cp for cp in run.checkpoints if cp.path == best], best
    if spec == "all":
        return list(run.checkpoints), best
    try:
        wanted = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise UsageError(
            f"--checkpoints {spec!r} is not best, all or a list of epochs",
            hint="e.g. --checkpoints 2,4,6",
        ) from None
    by_epoch = {cp.epoch: cp for cp in run.checkpoints if cp.epoch is not None}
    missing = [e for e in wanted if e not in by_epoch]
    if missing or not wanted:
        raise UsageError(
            f"no checkpoint for epoch(s) {missing or spec}", path=run.run_dir,
            hint=f"saved epochs: {', '.join(str(e) for e in sorted(by_epoch)) or 'none'}",
        )  # fmt: skip
    return [by_epoch[e] for e in wanted], best


def base_model_of(run: RunData) -> BaseModel:
    """The model the run trained on, and whether preview can draw it (SD1/SD2/SDXL)."""
    config = run.run_dir / "training_config.toml"
    source = run.training.get("pretrained_model_name_or_path")
    if not source:
        raise ConfigError(
            "the run's training_config.toml names no pretrained_model_name_or_path",
            path=config, hint="preview draws with the base model the LoRA was trained on",
        )  # fmt: skip
    text = config.read_text(encoding="utf-8") if config.is_file() else ""
    marker = SCRIPT_MARKER.search(text)  # names FLUX & co. too, which script_for_config does not
    script = marker.group(1) if marker else script_for_config(text, run.training)
    if script not in ("train_network", "sdxl_train_network"):
        raise ConfigError(
            f"preview draws SD1.5, SD2 and SDXL LoRAs; this run used {script}",
            path=config, hint="load its checkpoints in ComfyUI or A1111 to compare them",
        )  # fmt: skip
    return BaseModel(
        str(source),
        sdxl=script == "sdxl_train_network",
        v2=bool(run.training.get("v2")),
        v_parameterization=bool(run.training.get("v_parameterization")),
        sampler=str(run.training.get("sample_sampler") or "euler_a"),
    )


def run_trigger(run_dir: Path) -> str | None:
    """The trigger `kohyagen run` recorded in kohyagen.json, when there is one."""
    try:
        data = json.loads((run_dir / "kohyagen.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    trigger = (data.get("inputs") or {}).get("trigger")
    return trigger if isinstance(trigger, str) and trigger.strip() else None


def load_prompts(run: RunData, options: PreviewOptions) -> list[SamplePrompt]:
    path = options.prompts
    if path is None:
        own = run.training.get("sample_prompts")
        path = Path(own) if own else None
        if path is not None and not path.is_absolute():
            path = run.run_dir / path
    # a file the user named goes to read_prompts, which says what is wrong with it (a
    # FIFO, not UTF-8), not that the run has no prompts
    if path is None or (options.prompts is None and not path.is_file()):
        raise UsageError(
            "no prompts to preview: the run has no sample_prompts file",
            path=path or run.run_dir,
            hint="pass --prompts FILE (one prompt a line, kohya's --n/--w/--h/--d/--s options)",
        )
    prompts = [p for p in read_prompts(path) if p.prompt]
    if not prompts:
        raise UsageError("the prompts file has no prompt", path=path, hint="add a line")
    return prompts


def _identity(checkpoint: Checkpoint) -> list[Any]:
    """What tells one LoRA file from another by content, read fast: its size, its first MiB
    (the safetensors header, with kohya's training metadata) and its last 64 KiB. A copied
    run folder (new mtimes) keeps its images; a retrained checkpoint does not."""
    digest = hashlib.sha1()
    with open(checkpoint.path, "rb") as handle:
        digest.update(handle.read(1 << 20))
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - (1 << 16)))
        digest.update(handle.read())
    return [size, digest.hexdigest()]


def plan_jobs(
    folder: Path,
    checkpoints: list[Checkpoint],
    prompts: list[PreviewPrompt],
    options: PreviewOptions,
    model: BaseModel,
) -> list[Job]:
    """Every image, grouped so that each LoRA file is loaded once; base images first."""
    jobs: list[Job] = []
    cells: list[tuple[Checkpoint | None, float | None]] = [(None, None)]
    cells += [(cp, w) for cp in checkpoints for w in options.weights]
    identity = {cp.path: _identity(cp) for cp in checkpoints}  # read each file once
    for checkpoint, weight in cells:
        row = BASE if checkpoint is None else checkpoint.path.stem
        col = BASE if weight is None else f"w{weight:.2f}"
        for prompt in prompts:
            for k in range(options.seeds):
                seed = prompt.seed + k
                key = json.dumps(
                    [model.source, model.sampler, prompt.prompt, prompt.negative,
                     prompt.width, prompt.height, prompt.steps, prompt.scale, seed,
                     identity.get(checkpoint.path) if checkpoint else None, weight],
                )  # fmt: skip
                digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
                name = f"p{prompt.index:02d}-s{seed}-{digest}.png"
                jobs.append(Job(checkpoint, weight, prompt, seed, folder / row / col / name))
    return jobs


def default_renderer(model: BaseModel) -> Any:
    from kohyagen.trainer.preview import LoraRenderer

    return LoraRenderer(
        model.source,
        sdxl=model.sdxl,
        v2=model.v2,
        v_parameterization=model.v_parameterization,
        sampler=model.sampler,
    )


def _batches(jobs: list[Job]) -> list[list[Job]]:
    """Runs of jobs that differ only by seed (plan_jobs puts them next to each other)."""
    batches: list[list[Job]] = []
    for job in jobs:
        last = batches[-1][0] if batches else None
        if last and (last.checkpoint, last.weight, last.prompt) == (
            job.checkpoint, job.weight, job.prompt
        ):
            batches[-1].append(job)
        else:
            batches.append([job])
    return batches


def draw_missing(
    jobs: list[Job], make_renderer: Callable[[], Any], progress: Progress | None
) -> int:
    """Draw the jobs whose file is absent, the seeds of a cell as one batch; each file
    appears whole or not at all."""
    renderer = None
    drawn = done = 0
    for batch in _batches(jobs):
        missing = [job for job in batch if not job.path.is_file()]
        if missing:
            first = missing[0]
            renderer = renderer or make_renderer()
            renderer.use_lora(first.checkpoint.path if first.checkpoint else None)
            renderer.set_weight(first.weight or 0.0)
            p = first.prompt
            images = renderer.draw(
                prompt=p.prompt, negative=p.negative, width=p.width, height=p.height,
                seeds=[job.seed for job in missing], steps=p.steps, scale=p.scale,
            )  # fmt: skip
            for job, image in zip(missing, images, strict=True):
                job.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = job.path.with_name(f".{job.path.name}.{os.getpid()}.tmp.png")
                image.save(tmp)
                os.replace(tmp, job.path)
            drawn += len(missing)
        for job in batch:
            done += 1
            if progress is not None:
                progress(done, len(jobs), job)
    return drawn


def render_preview(
    run_dir: str | Path,
    options: PreviewOptions | None = None,
    *,
    progress: Progress | None = None,
    renderer: Callable[[BaseModel], Any] | None = None,
) -> PreviewResult:
    """Draw (or reuse) every preview image of the run, then write the grids and preview.json."""
    from kohyagen.report.preview_grid import write_grids

    options = options or PreviewOptions()
    if options.seeds < 1 or not options.weights:
        raise UsageError("preview needs at least one seed and one weight")
    run = load_run(run_dir)
    checkpoints, best = select_checkpoints(run, options.checkpoints)
    model = base_model_of(run)
    trigger = options.trigger or run_trigger(run.run_dir)
    prompts = preview_prompts(load_prompts(run, options), trigger, steps=options.steps,
                              first_seed=FIRST_SEED)  # fmt: skip
    folder = run.run_dir / PREVIEW_DIR
    jobs = plan_jobs(folder / "images", checkpoints, prompts, options, model)
    make = renderer or default_renderer
    drawn = draw_missing(jobs, lambda: make(model), progress)
    grids, index = write_grids(folder, jobs, checkpoints, best, prompts, options)
    return PreviewResult(folder, index, len(jobs), drawn, grids)
