"""Checks and figures of a rendered config pair, before anything is written.

The rendered texts are linted exactly as `kohyagen lint` would lint the files, so a
`--set` that kohya would reject stops the render instead of the training run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kohyagen.config.presets import GpuPreset, ModelPreset
from kohyagen.config.schema import TomlDocument
from kohyagen.errors import LintFailed
from kohyagen.findings import Finding, Severity

if TYPE_CHECKING:
    from kohyagen.config.render_values import StepPlan
    from kohyagen.dataset.layout import TrainDirLayout


def lint_rendered(
    training: TomlDocument, dataset: TomlDocument, prompts_path: Path | None, tables: Any = None
) -> list[Finding]:
    """kohyagen lint on the rendered texts; raises LintFailed on the first error."""
    from kohyagen.config.lint import LintOptions, lint_dataset_config, lint_training_config
    from kohyagen.config.locate import with_places

    options = LintOptions(tables=tables)
    findings = lint_training_config(training, dataset=dataset, options=options)
    findings += lint_dataset_config(dataset, training=training, options=options)
    texts = {str(training.path): training.text, str(dataset.path): dataset.text}
    findings = with_places(findings, texts)
    # Files this render is about to write are not missing.
    pending = {str(training.path), str(dataset.path)}
    findings = [
        f
        for f in findings
        if not (f.code == "file-not-found" and f.key == "sample_prompts" and prompts_path)
        and not (f.code == "dataset-config-unreadable" and str(dataset.path) in pending)
    ]
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors:
        first = errors[0]
        raise LintFailed(
            f"the rendered config is invalid: {first.key}: {first.message}",
            errors,
            hint=first.fix or "check the --set values",
        )
    return findings


def summarize_plan(
    model: ModelPreset, gpu: GpuPreset, layout: TrainDirLayout, plan: StepPlan, flat: dict,
    dataset: dict, prompt_word: str,
) -> dict[str, Any]:  # fmt: skip
    """The run's plan as the render reports it, with batch and epochs read after --set."""
    # kohya counts an epoch as ceil(images x repeats / batch) steps, and max_train_epochs
    # (when set) replaces max_train_steps (train_network.py), so the steps follow from these
    final_batch = flat.get("train_batch_size", 1)
    final_epochs = flat.get("max_train_epochs", plan.epochs)
    per_epoch = plan.per_epoch
    return {
        "model": model.name,
        "script": model.script,
        "gpu": gpu.name,
        "images": layout.image_count,
        "train_images": plan.train_images,
        "images_x_repeats": per_epoch,
        "validation_split": dataset.get("general", {}).get("validation_split", 0.0),
        "batch_size": final_batch,
        "epochs": final_epochs,
        "steps_per_epoch": math.ceil(per_epoch / final_batch),
        "total_steps": final_epochs * math.ceil(per_epoch / final_batch),
        "save_every_n_epochs": flat.get("save_every_n_epochs"),
        "price_per_hour": gpu.price_per_hour,
        "trigger": prompt_word,
        "apps": model.apps,
    }
