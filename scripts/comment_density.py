#!/usr/bin/env python3
"""Comment lines per 100 lines of code, per package of kohyagen/ and overall.

A comment line is a line that holds a `#` comment, on its own or after code; tool
pragmas alone (`# noqa`, `# type: ignore[...]`, `# fmt: skip`, `# pragma: ...`) do not
count, since they explain nothing. Lines of code are the other non-blank lines, less
docstrings: those document, but the figure is about comments that say why.

    scripts/comment_density.py            # a table
    scripts/comment_density.py --json
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kohyagen"
PRAGMA = re.compile(r"#\s*(noqa|type:\s*ignore|fmt:|pragma:)[^#]*$")


@dataclass
class Count:
    code: int = 0
    comments: int = 0

    def add(self, other: Count) -> None:
        self.code += other.code
        self.comments += other.comments

    @property
    def density(self) -> float:
        """Comment lines per 100 lines of code."""
        return 100.0 * self.comments / self.code if self.code else 0.0


def _docstring_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = node.body[0] if node.body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def count_source(source: str) -> Count:
    """The comment and code lines of one module's source."""
    comment_lines: set[int] = set()
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            if not PRAGMA.match(tok.string) and not tok.string.startswith("#!"):
                comment_lines.add(tok.start[0])
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):  # fmt: skip
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    code_lines -= _docstring_lines(ast.parse(source))
    return Count(code=len(code_lines), comments=len(comment_lines))


def part_of(path: Path, root: Path) -> str:
    """The package a module belongs to; modules at the top are the core."""
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else "core"


def measure(root: Path = PACKAGE) -> dict[str, Count]:
    """A count per part, and under "overall" the whole package."""
    parts: dict[str, Count] = {}
    overall = Count()
    for path in sorted(root.rglob("*.py")):
        count = count_source(path.read_text(encoding="utf-8"))
        parts.setdefault(part_of(path, root), Count()).add(count)
        overall.add(count)
    parts["overall"] = overall
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("root", nargs="?", type=Path, default=PACKAGE)
    opts = parser.parse_args(argv)
    parts = measure(opts.root)
    if opts.json:
        data = {k: {"code": c.code, "comments": c.comments, "per_100": round(c.density, 2)}
                for k, c in parts.items()}  # fmt: skip
        print(json.dumps(data, indent=2))
        return 0
    print(f"{'part':<10} {'code':>6} {'comments':>9} {'per 100':>8}")
    for name, c in parts.items():
        print(f"{name:<10} {c.code:>6} {c.comments:>9} {c.density:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
