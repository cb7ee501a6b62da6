"""The click options `kohyagen run` and `kohyagen cloud run` share, each declared once.

Both commands make the same run folder from the same inputs (`cloud run` prepares it here
with the run pipeline, then trains elsewhere), so an option both take must parse, default
and read the same in both. Each function returns one option's decorator; a command
applies them in its own order, next to the options only it has. The options whose help
says something command-specific (what --yes skips, what --budget stops) take that help
as an argument and share the rest. Options that mean different things in the two
commands (--model's choices, --gpu's default, --base-model's upload) stay in each
command's module. tests/test_run_options.py fails when the two commands drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

# What click.option / click.argument return: a decorator that adds one parameter.
ParamDecorator = Callable[[Callable[..., Any]], Callable[..., Any]]

BACKENDS = ["auto", "kohya", "builtin"]


def images_argument() -> ParamDecorator:
    # no exists=True: a missing folder is the run's own error (exit 1, with a hint), not a
    # usage error
    return click.argument("images", type=click.Path(path_type=Path, file_okay=False))


def name_option() -> ParamDecorator:
    return click.option("--name", required=True, help="LoRA name (file name and run folder).")


def trigger_option() -> ParamDecorator:
    return click.option("--trigger", required=True, help="Trigger word put in every caption.")


def budget_option(help_text: str) -> ParamDecorator:
    return click.option("--budget", type=float, help=help_text)


def backend_option(help_text: str) -> ParamDecorator:
    return click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        default="auto",
        show_default=True,
        help=help_text,
    )


def run_dir_option() -> ParamDecorator:
    return click.option(
        "--run-dir", type=click.Path(path_type=Path, file_okay=False), help="Default: runs/NAME."
    )


def yes_option(help_text: str) -> ParamDecorator:
    return click.option("--yes", "-y", is_flag=True, help=help_text)


def epochs_option() -> ParamDecorator:
    # no default here: None means the preset's epochs, decided with the config
    return click.option(
        "--epochs", type=click.IntRange(min=1), help="Training epochs (default: the preset's)."
    )


def set_option() -> ParamDecorator:
    return click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config option."
    )


def seed_option(help_text: str) -> ParamDecorator:
    return click.option("--seed", type=int, help=help_text)


def prices_option() -> ParamDecorator:
    return click.option(
        "--prices",
        "prices_file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Your prices TOML.",
    )


def restart_option() -> ParamDecorator:
    return click.option(
        "--restart",
        is_flag=True,
        help="Start the run folder over (old files kept under previous/).",
    )


def json_option() -> ParamDecorator:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
