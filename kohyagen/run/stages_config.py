"""The config stage of `kohyagen run`: render the configs for the GPU found (or named),
lint them, and record what the later stages read (seed, steps, where the files are).

Separate from kohyagen.run.stages because it is the one stage that speaks for
kohyagen.config (overrides, presets, lint) rather than for the dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kohyagen.run.context import RunContext, RunOptions

# detect_preset's answer on a machine without a GPU, and the preset rendered for it: no
# GPU preset describes a CPU, and the roomiest one turns no memory-saving option on
CPU = "cpu"
CPU_RENDER_PRESET = "80gb"


def _gpu_name(options: RunOptions) -> tuple[str, str | None]:
    if options.gpu.lower() != "auto":
        return options.gpu, None
    from kohyagen.estimate.hardware import detect_preset

    preset, hardware = detect_preset()
    if preset == "cpu":
        return preset, hardware.note
    return preset, f"{hardware.gpus[0].name} → GPU preset {preset}"


def _training_values(rendered_training: dict[str, Any], dataset_data: dict[str, Any]) -> dict:
    from kohyagen.config.plan_values import training_values

    return training_values(rendered_training, dataset_data)


def _config_overrides(ctx: RunContext, gpu: str) -> tuple[list[str], bool, str]:
    """The --set overrides plus the run's own (seed, save_state, CPU precision); whether
    save_state was added, and the GPU preset to render for."""
    opts = ctx.options
    overrides = list(opts.overrides)
    given = {o.split("=", 1)[0].strip().split(".")[-1] for o in overrides}
    if opts.seed is not None and "seed" not in given:
        overrides.append(f"seed={opts.seed}")
    auto_state = not given & {"save_state", "save_state_on_train_end", "save_last_n_epochs_state"}
    if auto_state:
        # A training state with each checkpoint (only the latest kept): an interrupted
        # run continues from its last epoch instead of starting over. Removed after a
        # successful training (see stages_training), since only a resume needs it.
        overrides += ["save_state=true", "save_last_n_epochs_state=1"]
    render_gpu = gpu
    if gpu == CPU:
        # No GPU preset describes a CPU: render for a roomy generic card, in full precision.
        render_gpu = CPU_RENDER_PRESET
        if "mixed_precision" not in given:
            overrides.append("mixed_precision=no")
        ctx.notes.append(
            "no GPU: configs rendered for the generic "
            f"{CPU_RENDER_PRESET} preset with mixed_precision=no, to train on the CPU"
        )
    return overrides, bool(auto_state), render_gpu


def _refuse_lint_errors(rendered: Any, run_dir: Path) -> None:
    """Stop before training when the rendered configs have a lint error."""
    from kohyagen.config.lint import lint_files
    from kohyagen.findings import count_errors

    findings = lint_files([rendered.training_path, rendered.dataset_path], cwd=run_dir)
    if count_errors(findings):
        from kohyagen.errors import LintFailed

        first = next(f for f in findings if f.severity.value == "error")
        raise LintFailed(
            f"the rendered config has {count_errors(findings)} error(s), first: "
            f"{first.key or ''} {first.message}",
            findings,
            path=first.file or rendered.training_path,
            hint=first.fix or "fix the --set override that caused it",
        )


def stage_config(ctx: RunContext) -> tuple[dict[str, Any], str | None]:
    """Render, write and lint the configs for this run; record them in the manifest."""
    from kohyagen.config.render import render_configs, write_configs

    opts = ctx.options
    gpu, gpu_note = _gpu_name(opts)
    if gpu_note:
        ctx.say("config", f"GPU: {gpu_note}")
    overrides, auto_state, render_gpu = _config_overrides(ctx, gpu)
    rendered = render_configs(
        ctx.train_dir(),
        model=opts.model,
        gpu=render_gpu,
        out_dir=ctx.run_dir,
        name=opts.name,
        trigger=opts.trigger,
        base_model=opts.base_model,
        overrides=tuple(overrides),
        epochs=opts.epochs,
        model_files=dict(opts.model_files) or None,
        fetch=opts.fetch,
        on_progress=lambda message: ctx.say("config", message),
    )
    # This stage owns these two files; an interrupted earlier attempt may have left them.
    write_configs(rendered, force=True)
    _refuse_lint_errors(rendered, ctx.run_dir)
    from kohyagen.config.schema import load_toml

    dataset_data = load_toml(rendered.dataset_path).data
    values = _training_values(dict(rendered.training), dataset_data)
    plan = getattr(rendered, "plan", None) or {}
    if plan.get("images_x_repeats"):
        # render knows what kohya will train on per epoch (after a validation split)
        values["images_x_repeats"] = plan["images_x_repeats"]
        values["steps_per_epoch"] = plan.get("steps_per_epoch")
    ctx.manifest.set("seed", values["seed"])
    ctx.manifest.update(
        "configs",
        training=str(rendered.training_path),
        dataset=str(rendered.dataset_path),
        gpu=gpu,
        resolved=dict(rendered.training),
        auto_save_state=bool(auto_state),
        values=values,
        notes=list(rendered.notes),
    )
    outputs = {
        "training_config": str(rendered.training_path),
        "dataset_config": str(rendered.dataset_path),
        "gpu": gpu,
    }
    return outputs, f"{rendered.training_path.name} for {gpu}"
