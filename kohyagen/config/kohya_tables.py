"""kohya's option tables: the bundled 48d368f ones, or those of the checkout that will run.

Options come and go between sd-scripts versions, so lint and config check against the
checkout `train` would launch when one is found. Its table is built once, in the
checkout's own Python (the LoRA script's `setup_parser()` builds the parser; its
actions are dumped as JSON), and cached by commit under
$XDG_CACHE_HOME/kohyagen/kohya-args/<commit>/. Without a checkout (or when its
Python cannot build the parser) the bundled schemas are used.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from functools import cache
from pathlib import Path

from kohyagen.atomic import write_text_atomic
from kohyagen.config.arg_schema import argument_property
from kohyagen.config.family import FamilyGuess
from kohyagen.config.schema import TRAIN_NETWORK, training_properties
from kohyagen.errors import ConfigError

BUNDLED_COMMIT = "48d368f"
EXTRACT_TIMEOUT_S = 300
# Run inside the checkout: import the script, build its parser, print its actions.
_DUMP = r"""
import argparse, importlib, json, sys
sys.path.insert(0, ".")
parser = importlib.import_module(sys.argv[1]).setup_parser()
kinds = {argparse._StoreTrueAction: "store_true", argparse._StoreFalseAction: "store_false",
         argparse._AppendAction: "append", argparse._StoreConstAction: "store_const"}
def safe(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)
out = []
for a in parser._actions:
    if isinstance(a, argparse._HelpAction):
        continue
    kind = kinds.get(type(a), "store")
    t = getattr(a.type, "__name__", None) if a.type is not None else None
    out.append({"dest": a.dest, "option_strings": a.option_strings, "action": kind, "type": t,
                "default": safe(a.default), "nargs": a.nargs,
                "choices": [safe(c) for c in a.choices] if a.choices else None})
print(json.dumps(out))
"""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kohyagen" / "kohya-args"


def checkout_commit(checkout: Path) -> str:
    """The checkout's git commit; without git, a hash of its scripts (changes when they do)."""
    try:
        proc = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    digest = hashlib.sha256()
    for path in sorted(checkout.glob("*.py")) + sorted((checkout / "library").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return "files-" + digest.hexdigest()[:16]


class KohyaTables:
    """Option tables of one sd-scripts checkout, built on demand per script and cached."""

    def __init__(self, checkout: Path, python: str) -> None:
        self.checkout = Path(checkout)
        self.python = python
        self.commit = checkout_commit(self.checkout)
        self.failures: dict[str, str] = {}
        self._props: dict[str, dict[str, dict] | None] = {}

    @property
    def scripts_used(self) -> list[str]:
        return list(self._props)

    @property
    def label(self) -> str:
        return f"sd-scripts {self.commit[:7] if len(self.commit) == 40 else self.commit}"

    def arguments(self, script: str) -> list[dict] | None:
        cached = cache_root() / self.commit / f"{script}.args.json"
        try:
            return json.loads(cached.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # none yet, unreadable or damaged: built again below
        if not (self.checkout / f"{script}.py").is_file():
            return None
        try:
            proc = subprocess.run([self.python, "-c", _DUMP, script], cwd=self.checkout,
                                  capture_output=True, text=True, timeout=EXTRACT_TIMEOUT_S,
                                  check=False)  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            self.failures[script] = str(exc)
            return None
        try:
            args = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
        except (ValueError, IndexError):
            args = None
        if not isinstance(args, list):
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            self.failures[script] = last
            return None
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(cached, json.dumps(args, indent=1))
        except OSError:
            # a read-only home or a full disk costs the next run a rebuild, never this
            # lint or training its version-exact table
            pass
        return args

    def properties(self, script: str) -> dict[str, dict] | None:
        if script not in self._props:
            args = self.arguments(script)
            self._props[script] = (
                {a["dest"]: argument_property(a) for a in args if a.get("dest")} if args else None
            )
        return self._props[script]


@cache
def _bundled(script: str) -> dict[str, dict] | None:
    """The schema of a script kohyagen ships, else its args table in a source checkout."""
    try:
        return training_properties(script)
    except ConfigError:
        pass
    facts = Path(__file__).resolve().parents[2] / "facts" / "kohya" / f"{script}.args.json"
    if not facts.is_file():
        return None
    args = json.loads(facts.read_text(encoding="utf-8"))["arguments"]
    return {a["dest"]: argument_property(a) for a in args}


def properties_for(family: FamilyGuess, tables: KohyaTables | None) -> dict[str, dict]:
    """The option table lint checks a training config against."""
    script = family.script or TRAIN_NETWORK
    if tables is not None:
        found = tables.properties(script)
        if found:
            return found
    return _bundled(script) or training_properties(TRAIN_NETWORK)


def checked_against(tables: KohyaTables | None, scripts: list[str]) -> str:
    """Which version the tables were, in words for the user."""
    if tables is None:
        return f"kohya's options of sd-scripts {BUNDLED_COMMIT} (bundled)"
    built = [s for s in scripts if tables.properties(s)]
    if built:
        return f"kohya's options of {tables.label} at {tables.checkout}"
    why = "; ".join(f"{s}: {m}" for s, m in tables.failures.items()) or "no LoRA script found"
    return (
        f"kohya's options of sd-scripts {BUNDLED_COMMIT} (bundled): the checkout at "
        f"{tables.checkout} could not list its own ({why})"
    )
