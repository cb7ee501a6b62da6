"""CLI commands for this concern (see COMMANDS)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
