"""The architecture's import rules, checked from the source (ast), not by importing it.

The rules (ARCHITECTURE.md): the torch-free packages never import kohyagen.trainer or
torch-stack modules at import time; no library package imports kohyagen.cli; the core
imports nothing above it; no two modules import each other in a circle. Lazy imports
inside functions count for the circle and cli rules (a circle through a function is still
a circle for the reader) but not for the torch rule, which is about what `import` costs.
Imports under `if TYPE_CHECKING:` are the same: they tie two modules together for the reader
and for mypy, so they count for circles, but they cost nothing at run time.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

CORE = frozenset(
    {"errors", "findings", "resources", "atomic", "toml_compat", "quiet", "safe_io", "validate"}
)
TORCH_STACK = frozenset(
    {"torch", "diffusers", "transformers", "accelerate", "peft", "bitsandbytes", "safetensors"}
)
HEAVY_PACKAGES = frozenset({"trainer"})


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    at_import_time: bool


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.Module, module: str, is_package: bool) -> list[tuple[str, int, bool]]:
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
                continue
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                # the names it imports exist only for the type checker: never at import time
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), False)
                visit(ast.Module(body=child.orelse, type_ignores=[]), top)
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(child, module, is_package)
                found.append((base, child.lineno, top))
                # `from kohyagen.x import y` may name submodule y
                found.extend((f"{base}.{a.name}", child.lineno, top) for a in child.names)
            visit(child, top)

    visit(tree, True)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts.pop()
    parts = parts[: len(parts) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def collect(root: Path) -> tuple[set[str], list[Edge]]:
    """Every module under the package `root` and every import edge between them."""
    modules: dict[str, Path] = {
        module_name(root, p): p for p in sorted(root.rglob("*.py"))
    }
    edges: list[Edge] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, line, top in _imports(tree, name, path.name == "__init__.py"):
            top_name = target.split(".")[0]
            if target in modules or top_name in TORCH_STACK:
                edges.append(Edge(name, target, line, top))
    return set(modules), edges


def part_of(module: str) -> str:
    """`kohyagen.dataset.scan` → `dataset`; a core module → `core`."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    if len(parts) == 2 and parts[1] in CORE:
        return "core"
    return parts[1]


def violations(root: Path) -> list[str]:
    modules, edges = collect(root)
    found: list[str] = []
    for e in edges:
        src_part = part_of(e.source)
        tgt_top = e.target.split(".")[0]
        where = f"{e.source} (line {e.line})"
        if tgt_top in TORCH_STACK:
            if e.at_import_time and src_part not in HEAVY_PACKAGES:
                found.append(f"{where} imports {e.target} at import time")
            continue
        tgt_part = part_of(e.target)
        if src_part not in HEAVY_PACKAGES and tgt_part in HEAVY_PACKAGES and e.at_import_time:
            found.append(f"{where} imports {e.target} at import time")
        if tgt_part == "cli" and src_part != "cli" and e.source.split(".")[-1] != "__main__":
            found.append(f"{where} imports the CLI ({e.target})")
        if src_part == "core" and e.source != root.name and tgt_part != "core":
            found.append(f"{where}: the core imports {e.target}, which is above it")
    found.extend(_circles(modules, edges))
    return found


def _circles(modules: set[str], edges: list[Edge]) -> list[str]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        # importing a package's own __init__ is how Python reaches its submodules
        if e.target in modules and e.target != e.source and not e.source.startswith(e.target + "."):
            graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[str] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append("import circle: " + " ↔ ".join(sorted(group)))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out
