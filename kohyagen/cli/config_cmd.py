"""`kohyagen config` (render kohya's two TOMLs) and `kohyagen lint` (check any kohya TOML)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from kohyagen.cli.output import emit_json, print_findings, stdout_console
from kohyagen.findings import count_errors


@click.command("config")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--model", "model", required=True, help="Model preset: sd15, sd2 or sdxl.")
@click.option("--gpu", "gpu", required=True, help="GPU preset, e.g. rtx4090, a100-80, 24gb.")
@click.option("--name", help="LoRA name (output_name). Default: the first folder's class tokens.")
@click.option("--trigger", help="Trigger word, used for sample prompts and caption checks.")
@click.option("--base-model", help="Base model: a .safetensors/.ckpt file, a diffusers folder "
              "or a Hugging Face id. Default: the preset's.")  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a kohya option (typed by kohya's schema). Repeatable; prefix "
              "dataset. or training. to pick the file.")  # fmt: skip
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for the configs. Default: runs/NAME.")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=1), help="Train this many epochs.")
@click.option("--samples", is_flag=True, help="Also write sample_prompts.txt (preview images "
              "at every checkpoint).")  # fmt: skip
@click.option("--xformers", is_flag=True, help="Use xformers attention instead of sdpa.")
@click.option("--dry-run", is_flag=True, help="Print the configs; write nothing.")
@click.option("--force", is_flag=True, help="Overwrite existing config files.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def config_command(
    dataset: Path,
    model: str,
    gpu: str,
    name: str | None,
    trigger: str | None,
    base_model: str | None,
    overrides: tuple[str, ...],
    out_dir: Path | None,
    epochs: int | None,
    samples: bool,
    xformers: bool,
    dry_run: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Write training_config.toml and dataset_config.toml for DATASET (a kohya train dir,
    the folder holding N_name/ subfolders) that plain kohya sd-scripts runs unchanged."""
    from kohyagen.config.render import default_name, load_train_dir, render_configs, write_configs

    if out_dir is None:
        # The default folder is named after the LoRA, so the name must be known first.
        out_dir = Path("runs") / default_name(load_train_dir(dataset), name)
    rendered = render_configs(
        dataset,
        model=model,
        gpu=gpu,
        out_dir=out_dir,
        name=name,
        trigger=trigger,
        base_model=base_model,
        overrides=overrides,
        samples=samples,
        epochs=epochs,
        attention="xformers" if xformers else "sdpa",
    )
    written = [] if dry_run else write_configs(rendered, force=force)
    if as_json:
        data = rendered.to_dict()
        data["written"] = [str(p) for p in written]
        data["dry_run"] = dry_run
        emit_json(data)
        return
    _print_rendered(rendered, written, dry_run=dry_run)


def _print_rendered(rendered: Any, written: list[Path], *, dry_run: bool) -> None:
    """The configs (on a dry run), the plan, notes, findings, written files and next step."""
    console = stdout_console()
    if dry_run:
        console.print(f"# ---- {rendered.training_path}", markup=False)
        console.print(rendered.training_text, markup=False, highlight=False)
        console.print(f"# ---- {rendered.dataset_path}", markup=False)
        console.print(rendered.dataset_text, markup=False, highlight=False)
        if rendered.sample_prompts_text:
            console.print(f"# ---- {rendered.sample_prompts_path}", markup=False)
            console.print(rendered.sample_prompts_text, markup=False, highlight=False)
    plan = rendered.plan
    console.print(
        f"{plan['model']} on {plan['gpu']}: {plan['images']} images "
        f"({plan['images_x_repeats']} per epoch with repeats), batch {plan['batch_size']}, "
        f"{plan['epochs']} epochs, {plan['total_steps']} steps, a checkpoint every "
        f"{plan['save_every_n_epochs']} epoch(s)",
        markup=False,
    )
    for note in rendered.notes:
        console.print(f"note: {note}", markup=False)
    for finding in rendered.findings:
        console.print(f"{finding.severity.value}: {finding.key}: {finding.message}", markup=False)
    for path in written:
        console.print(f"wrote {path}", markup=False)
    if written:
        quoted = shlex.quote(str(rendered.training_path))
        console.print(
            f"next: kohyagen train {quoted}   (or plain kohya: accelerate "
            f"launch {plan['script']} --config_file {quoted})",
            markup=False,
        )


@click.command("lint")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--cwd", type=click.Path(path_type=Path, file_okay=False),
              help="Folder kohya will be launched from (relative paths resolve against it). "
              "Default: the current folder.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def lint_command(files: tuple[Path, ...], cwd: Path | None, as_json: bool) -> None:
    """Check kohya training or dataset TOMLs (hand-written ones too): every unknown key,
    wrong type, misplaced key, missing essential and caption mismatch, with the fix.
    Exits 1 when there are errors."""
    from kohyagen.config.lint import lint_files

    findings = lint_files(list(files), cwd=cwd)
    errors = count_errors(findings)
    if as_json:
        emit_json(
            {
                "files": [str(f) for f in files],
                "errors": errors,
                "findings": [f.to_dict() for f in findings],
            }
        )
    else:
        print_findings(findings)
    if errors:
        raise click.exceptions.Exit(1)


COMMANDS: list[click.Command] = [config_command, lint_command]
