#!/usr/bin/env python3
"""Regenerate an argument table (facts/kohya/*.args.json) from an sd-scripts checkout.

kohya's scripts define their options in argparse, spread over helper functions
(train_util.add_training_arguments, …) that each script's `setup_parser()` calls. This
builds that parser in the checkout's own Python — its venv (`venv/` or `.venv/`) when it
has one, else this interpreter — with the checkout on sys.path, and dumps every argparse
action: dest, option strings, action kind, type, default, nargs, choices, required, const,
metavar, and where the add_argument call is (file:line and function). Help texts are left
out. Nothing is trained and no model is loaded: only the script module is imported.

    scripts/extract_kohya_args.py --sd-scripts ../sd-scripts --script train_network.py \\
        -o facts/kohya/train_network.args.json

When the output file exists, its `notes` (facts written by people) are kept. A module
the script imports but that cannot be installed where you run this can be replaced by a
stub with `--stub NAME` (kohya's scripts import torchvision at the top, for example).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

GENERIC_NOTES = [
    "defined_at is the file:line (relative to the sd-scripts repo) of the add_argument call; "
    "defined_in_function is the enclosing function name",
    "action kinds: store / store_true / store_false / append / store_const / boolean_optional",
    "type null means argparse keeps the raw string (or bool for store_true/store_false)",
    "the implicit -h/--help action is omitted",
    "defaults are argparse defaults; argparse does not convert non-string defaults",
]

# Runs inside the checkout's interpreter: argv is [checkout, script, stub, ...]. It prints
# the table's `arguments` and the library versions as one JSON object on stdout.
DUMPER = r'''
import argparse, importlib.util, json, os, sys, types

root, script, stubs = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3:]


class _Stub(types.ModuleType):
    """A module whose every attribute is a further stub, callable and subclassable."""
    __path__ = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        return _Stub(self.__name__)

    def __mro_entries__(self, bases):
        return (object,)


for name in stubs:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), _Stub(".".join(parts[:i])))

# Where each add_argument call is: kohya's options come from helpers in library/*.py.
sites = {}
_original = argparse._ActionsContainer.add_argument


def _recording(self, *args, **kwargs):
    action = _original(self, *args, **kwargs)
    caller = sys._getframe(1)
    path = os.path.relpath(os.path.abspath(caller.f_code.co_filename), root)
    sites[id(action)] = (f"{path.replace(os.sep, '/')}:{caller.f_lineno}", caller.f_code.co_name)
    return action


argparse._ActionsContainer.add_argument = _recording
sys.path.insert(0, root)
os.chdir(root)
spec = importlib.util.spec_from_file_location("_kohya_script", os.path.join(root, script))
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
parser = module.setup_parser()

KINDS = {
    argparse._StoreAction: "store", argparse._StoreTrueAction: "store_true",
    argparse._StoreFalseAction: "store_false", argparse._AppendAction: "append",
    argparse._StoreConstAction: "store_const", argparse._AppendConstAction: "append_const",
    argparse._CountAction: "count", argparse.BooleanOptionalAction: "boolean_optional",
}


def plain(value):
    """JSON as is where it can be; anything else (a Path default, say) as its str()."""
    try:
        json.dumps(value)
        return value
    except TypeError:
        return [plain(v) for v in value] if isinstance(value, (list, tuple)) else str(value)


rows = []
for action in parser._actions:
    if isinstance(action, argparse._HelpAction):
        continue
    at, function = sites.get(id(action), (None, None))
    rows.append({
        "dest": action.dest,
        "option_strings": list(action.option_strings),
        "action": KINDS.get(type(action), type(action).__name__),
        "type": None if action.type is None else getattr(action.type, "__name__", str(action.type)),
        "default": plain(action.default),
        "nargs": action.nargs,
        "choices": None if action.choices is None else plain(list(action.choices)),
        "required": action.required,
        "const": plain(action.const),
        "metavar": plain(action.metavar),
        "defined_at": at,
        "defined_in_function": function,
    })

from importlib import metadata
versions = {}
for dist in ("torch", "diffusers", "transformers", "accelerate"):
    try:
        versions[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
        pass
print(json.dumps({"arguments": rows, "versions": versions, "python": sys.version.split()[0]}))
'''


def checkout_python(checkout: Path) -> str:
    """The checkout's own venv interpreter (kohya's install guide makes `venv/`), else this one."""
    for venv in ("venv", ".venv"):
        for rel in ("bin/python", "Scripts/python.exe"):
            candidate = checkout / venv / rel
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return sys.executable


def _git(checkout: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(checkout), *args], capture_output=True, text=True, check=False
        )
    except OSError:  # no git on this machine: the table just names no commit
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def repo_name(url: str | None) -> str | None:
    """`owner/name` from a git remote URL (https or ssh form), else None."""
    if not url:
        return None
    tail = url.rstrip("/").removesuffix(".git").replace(":", "/").split("/")
    return "/".join(tail[-2:]) if len(tail) >= 2 else None


def run_dumper(checkout: Path, script: str, python: str, stubs: list[str]) -> dict[str, Any]:
    """The parser's actions and library versions, from a subprocess in the checkout's Python."""
    done = subprocess.run(
        [python, "-c", DUMPER, str(checkout), script, *stubs],
        capture_output=True,
        text=True,
        cwd=checkout,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(
            f"error: building {script}'s parser with {python} failed: {last}\n"
            "hint: install the checkout's requirements in its venv, or stub the module "
            "that fails to import with --stub NAME"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_table(
    checkout: Path, script: str, *, python: str, stubs: list[str], notes: list[str]
) -> dict[str, Any]:
    """The whole table, in the shape of facts/kohya/*.args.json."""
    dumped = run_dumper(checkout, script, python, stubs)
    libs = ", ".join(f"{k} {v}" for k, v in dumped["versions"].items()) or "no torch stack"
    stubbed = f"; stubbed: {', '.join(stubs)}" if stubs else ""
    return {
        "source_repo": repo_name(_git(checkout, "config", "--get", "remote.origin.url"))
        or "kohya-ss/sd-scripts",
        "script": script,
        "commit_sha": _git(checkout, "rev-parse", "HEAD"),
        "commit_date": _git(checkout, "log", "-1", "--format=%cI"),
        "commit_subject": _git(checkout, "log", "-1", "--format=%s"),
        "branch": _git(checkout, "rev-parse", "--abbrev-ref", "HEAD"),
        "extraction_method": (
            "parser built by calling setup_parser() with scripts/extract_kohya_args.py in "
            f"Python {dumped['python']} ({libs}{stubbed}); argparse actions introspected; "
            "help strings omitted"
        ),
        "argument_count": len(dumped["arguments"]),
        "notes": notes,
        "arguments": dumped["arguments"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sd-scripts", type=Path, required=True, help="the sd-scripts checkout")
    parser.add_argument("--script", required=True, help="e.g. train_network.py")
    parser.add_argument("-o", "--out", type=Path, help="write here (default: stdout)")
    parser.add_argument("--python", help="interpreter to use (default: the checkout's venv)")
    parser.add_argument("--stub", action="append", default=[], help="module to stub out")
    opts = parser.parse_args(argv)
    checkout = opts.sd_scripts.resolve()
    if not (checkout / opts.script).is_file():
        print(f"error: {checkout / opts.script} does not exist", file=sys.stderr)
        return 1
    notes = GENERIC_NOTES
    if opts.out is not None and opts.out.is_file():
        notes = json.loads(opts.out.read_text(encoding="utf-8")).get("notes") or notes
    table = build_table(
        checkout,
        opts.script,
        python=opts.python or checkout_python(checkout),
        stubs=opts.stub,
        notes=notes,
    )
    # the shape of the tables in facts/kohya: one-space indent, no final newline
    text = json.dumps(table, indent=1, ensure_ascii=False)
    if opts.out is None:
        sys.stdout.write(text + "\n")
    else:
        opts.out.write_text(text, encoding="utf-8")
        print(f"{opts.out}: {table['argument_count']} arguments", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
