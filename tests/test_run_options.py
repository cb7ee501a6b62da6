"""`kohyagen run` and `kohyagen cloud run` take their shared options from one declaration
(kohyagen.cli.run_options): the two commands must not drift apart."""

from __future__ import annotations

from typing import Any

import click
import pytest

from kohyagen.cli import run_options
from kohyagen.cli.cloud_run_cmd import cloud_run_cmd
from kohyagen.cli.run_cmd import run_cmd

# parameter name -> the factory both commands declare it with (and its help, where the
# help says something command-specific)
SHARED = {
    "images": run_options.images_argument,
    "name": run_options.name_option,
    "trigger": run_options.trigger_option,
    "run_dir": run_options.run_dir_option,
    "epochs": run_options.epochs_option,
    "overrides": run_options.set_option,
    "prices_file": run_options.prices_option,
    "restart": run_options.restart_option,
    "as_json": run_options.json_option,
}
SHARED_BUT_HELP = {
    "budget": run_options.budget_option,
    "backend": run_options.backend_option,
    "yes": run_options.yes_option,
    "seed": run_options.seed_option,
}
# in both commands but meaning something different: checked by hand, kept apart
DIFFERENT = {"model", "base_model", "gpu"}


def _params(command: click.Command) -> dict[str, dict[str, Any]]:
    return {p.name: p.to_info_dict() for p in command.params if p.name}


def _declared(decorator: run_options.ParamDecorator) -> dict[str, Any]:
    """The parameter a run_options decorator adds, as click describes it."""

    def command() -> None:  # pragma: no cover - never called
        pass

    param = click.command()(decorator(command)).params[0]
    return param.to_info_dict()


def _without_help(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k != "help"}


def test_both_commands_declare_the_shared_options_alike():
    run, cloud = _params(run_cmd), _params(cloud_run_cmd)
    for name, factory in SHARED.items():
        assert run[name] == cloud[name] == _declared(factory()), name
    for name, factory in SHARED_BUT_HELP.items():
        declared = _without_help(_declared(factory("any help")))
        assert _without_help(run[name]) == _without_help(cloud[name]) == declared, name
        assert run[name]["help"] and cloud[name]["help"], name


def test_every_option_both_commands_take_is_shared_or_known_to_differ():
    both = set(_params(run_cmd)) & set(_params(cloud_run_cmd))
    assert both == set(SHARED) | set(SHARED_BUT_HELP) | DIFFERENT


@pytest.mark.parametrize("name", sorted(DIFFERENT))
def test_the_options_kept_apart_do_differ(name):
    # were they the same, they would belong in run_options
    assert _params(run_cmd)[name] != _params(cloud_run_cmd)[name]


def test_shared_help_texts_are_what_each_command_said():
    """The per-command help texts, as `--help` showed them before the options were shared."""
    run, cloud = _params(run_cmd), _params(cloud_run_cmd)
    assert run["yes"]["help"] == "Do not ask before training."
    assert cloud["yes"]["help"] == "Do not ask before renting."
    assert run["seed"]["help"] == "Training seed (recorded in the manifest)."
    assert cloud["seed"]["help"] == "Training seed."
    assert run["budget"]["help"].startswith("Stop before training")
    assert cloud["budget"]["help"].startswith("Refuse when the expected total")
