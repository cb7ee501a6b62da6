"""The kohyagen command line: thin click commands over library functions.

This package is the only place where errors become messages and exit codes
(0 ok, 1 known error, 2 usage, 3 training failed). Each concern keeps its
commands in its own module here and lists them in COMMANDS.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from kohyagen import __version__
from kohyagen.errors import EXIT_ERROR, EXIT_INTERRUPTED, KohyagenError, from_os_error


def _print_traceback() -> None:
    """--debug's traceback; the module is imported here because start-up pays for every
    import (traceback pulls in linecache and tokenize)."""
    import traceback

    traceback.print_exc()


def _echo_error(text: str) -> None:
    click.echo(f"error: {text}", err=True)


class KohyagenGroup(click.Group):
    """A click group that maps kohyagen's error tree to exit codes in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        # click's own exits and usage errors already carry their exit code and message
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        # the one place where library errors become a line on stderr and an exit code
        except KohyagenError as exc:
            if ctx.meta.get("kohyagen.debug"):
                _print_traceback()
            _echo_error(str(exc))
            ctx.exit(exc.exit_code)
        # 130 = 128 + SIGINT, what a shell reports for a Ctrl-C
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        # disk full, read-only, no permission: known problems with a fix, not bugs
        except OSError as exc:
            known = from_os_error(exc, training=ctx.invoked_subcommand == "train")
            if known is None:
                self._unexpected(ctx, exc)
            else:
                if ctx.meta.get("kohyagen.debug"):
                    _print_traceback()
                _echo_error(str(known))
                ctx.exit(known.exit_code)
        # anything else is a bug: say so in one line instead of a traceback
        except Exception as exc:
            self._unexpected(ctx, exc)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _load(cmd_name)

    @staticmethod
    def _unexpected(ctx: click.Context, exc: Exception) -> None:
        if ctx.meta.get("kohyagen.debug"):
            _print_traceback()
        _echo_error(
            f"unexpected {type(exc).__name__}: {exc} "
            "(this is a bug in kohyagen; rerun with --debug for the traceback and report it)"
        )
        ctx.exit(EXIT_ERROR)


@click.group(cls=KohyagenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kohyagen")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """From a folder of images to a trained, well-chosen Stable Diffusion LoRA,
    on top of kohya sd-scripts."""
    ctx.meta["kohyagen.debug"] = debug


# Each command name and the module that defines it (in its COMMANDS). A command's module
# is imported when the command runs, not at start-up: importing all seven was a third of
# kohyagen.cli's import time, paid by every `kohyagen dataset check`.
# tests/test_cli_lazy.py keeps this table in step with the modules' COMMANDS.
LAZY_COMMANDS = {
    "dataset": "dataset_cmd",
    "tag": "tag_cmd",
    "config": "config_cmd",
    "lint": "config_cmd",
    "train": "train_cmd",
    "report": "train_cmd",
    "pick": "train_cmd",
    "preview": "preview_cmd",
    "estimate": "run_cmd",
    "queue": "run_cmd",
    "queue-item": "run_cmd",
    "run": "run_cmd",
    "demo": "run_cmd",
    "cloud": "cloud_cmd",
}


def _load(name: str) -> click.Command | None:
    """The command `name`, its module imported and its COMMANDS added on first use."""
    if name not in main.commands and name in LAZY_COMMANDS:
        import importlib

        module = importlib.import_module(f"kohyagen.cli.{LAZY_COMMANDS[name]}")
        for command in module.COMMANDS:
            main.add_command(command)
    return main.commands.get(name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
