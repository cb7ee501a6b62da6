"""`kohyagen config` (render kohya's two TOMLs) and `kohyagen lint` (check any kohya TOML)."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kohyagen.cli.model_file_options import fetch_option, model_file_option, parse_model_files
from kohyagen.cli.output import emit_json, format_finding, print_findings, stdout_console
from kohyagen.findings import Finding, count_errors

if TYPE_CHECKING:
    from kohyagen.config.kohya_tables import KohyaTables


@click.command("config")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--model", "model", required=True, help="Model preset: sd15, sd2, sdxl, flux, "
              "chroma, sd3, lumina2, hunyuan-image or anima.")  # fmt: skip
@click.option("--gpu", "gpu", required=True, help="GPU preset, e.g. rtx4090, a100-80, 24gb.")
@click.option("--name", help="LoRA name (output_name). Default: the first folder's class tokens.")
@click.option("--trigger", help="Trigger word, used for sample prompts and caption checks.")
@click.option("--base-model", help="Base model: a .safetensors/.ckpt file, a diffusers folder "
              "or a Hugging Face id. Default: the preset's.")  # fmt: skip
@model_file_option()
@fetch_option()
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a kohya option (typed by kohya's schema). Repeatable; prefix "
              "dataset. or training. to pick the file.")  # fmt: skip
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for the configs. Default: runs/NAME.")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=1), help="Train this many epochs.")
@click.option("--samples/--no-samples", default=True, show_default=True,
              help="Write sample_prompts.txt: preview images at every saved checkpoint.")  # fmt: skip
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
    model_files: tuple[str, ...],
    fetch: bool,
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
        # checked against the checkout that will train, when there is one: its options can
        # differ from the bundled tables of sd-scripts 48d368f
        tables=_kohya_tables(None, None),
        model_files=parse_model_files(model_files),
        fetch=fetch,
        # download progress on stderr: stdout is the result (or the JSON)
        on_progress=lambda text: click.echo(text, err=True),
    )
    # rendered and linted either way, so a dry run reports the same errors a real one would
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
    # "# ----" headers are TOML comments: the dry-run output pastes back into files as it is
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
    console.print(f"loads in: {plan['apps']}", markup=False)
    for note in rendered.notes:
        console.print(f"note: {note}", markup=False)
    for finding in rendered.findings:
        click.echo(format_finding(finding))
    for path in written:
        console.print(f"wrote {path}", markup=False)
    if written:
        # the plain kohya command too: the files are kohya's own, kohyagen is optional
        quoted = shlex.quote(str(rendered.training_path))
        console.print(
            f"next: kohyagen train {quoted}   (or plain kohya: accelerate "
            f"launch {plan['script']} --config_file {quoted})",
            markup=False,
        )


def _kohya_tables(sd_scripts: Path | None, cwd: Path | None) -> KohyaTables | None:
    """The option tables of the sd-scripts checkout `train` would use, if there is one."""
    from kohyagen.config.kohya_tables import KohyaTables
    from kohyagen.errors import KohyagenError
    from kohyagen.launch.checkout import find_python, find_sd_scripts

    try:
        checkout = find_sd_scripts(sd_scripts, cwd=cwd)
    except KohyagenError:
        # an explicit --sd-scripts that is not a checkout is an error; none found is normal
        # (the bundled tables are used)
        if sd_scripts is not None:
            raise
        return None
    return KohyaTables(checkout, find_python(checkout))


def _shown_relative(finding: Finding) -> Finding:
    """Files under the current folder are printed as the user would type them."""
    if not finding.file:
        return finding
    try:
        rel = Path(finding.file).relative_to(Path.cwd())
    except ValueError:
        # outside the current folder: the absolute path is the unambiguous one
        return finding
    return dataclasses.replace(finding, file=str(rel))


@click.command("lint")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--cwd", type=click.Path(path_type=Path, file_okay=False),
              help="Folder kohya will be launched from (relative paths resolve against it). "
              "Default: the current folder.")  # fmt: skip
@click.option("--model", "model", help="Model family (sd15, sd2, sdxl, flux, chroma, sd3, "
              "lumina2, hunyuan-image, anima). Default: told from the script, keys, model file "
              "or name.")  # fmt: skip
@click.option("--script", help="The kohya script the config is for, e.g. sdxl_train_network.py.")
@click.option("--sd-scripts", "sd_scripts", type=click.Path(path_type=Path),
              help="sd-scripts checkout whose own option table to check against (default: "
              "the one `kohyagen train` finds; else the bundled tables).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def lint_command(
    files: tuple[Path, ...],
    cwd: Path | None,
    model: str | None,
    script: str | None,
    sd_scripts: Path | None,
    as_json: bool,
) -> None:
    """Check kohya training or dataset TOMLs (hand-written ones too): every unknown key,
    wrong type, misplaced key, missing essential and caption mismatch, with the fix.
    Files given together are one launch. Exits 1 when there are errors."""
    from kohyagen.config.family import normalise_family
    from kohyagen.config.kohya_tables import checked_against
    from kohyagen.config.lint import LintOptions, lint_files
    from kohyagen.errors import UsageError

    # checked here, not by click.Choice: aliases (sd1.5, sd3.5, hunyuan, ...) are accepted too
    if model is not None and normalise_family(model) is None:
        raise UsageError(f"unknown model family {model!r}",
                         hint="use sd15, sd2, sdxl, flux, chroma, sd3, lumina2, hunyuan-image "
                         "or anima")  # fmt: skip
    tables = _kohya_tables(sd_scripts, cwd)
    options = LintOptions(model=model, script=script, tables=tables)
    findings = lint_files(list(files), cwd=cwd, options=options)
    errors = count_errors(findings)
    scripts = sorted({s for s in (tables.scripts_used if tables else [])})
    version = checked_against(tables, scripts)
    if as_json:
        emit_json(
            {
                "files": [str(f) for f in files],
                "errors": errors,
                "checked_against": version,
                "findings": [f.to_dict() for f in findings],
            }
        )
    else:
        print_findings([_shown_relative(f) for f in findings])
        # which sd-scripts the findings hold for: options differ between kohya versions
        click.echo(f"checked against {version}")
    if errors:
        raise click.exceptions.Exit(1)


COMMANDS: list[click.Command] = [config_command, lint_command]
