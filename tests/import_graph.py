"""The import graph of Saigon's packages, read from the source (ast), folded into parts.

A part is a top-level package (saigon_contract, saigon_operator, saigon_agent) or, inside
saigon_runtime, one subpackage (engine, adapters, server, mesh, ...) or one top-level module.
Every import counts, including ones inside functions and under TYPE_CHECKING: a deferred
import is still a dependency.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

RUNTIME = "saigon_runtime"


@dataclass(frozen=True)
class Edge:
    importer: str  # module
    imported: str  # module
    line: int

    def __str__(self) -> str:
        return f"{self.importer} (line {self.line}) imports {self.imported}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(root: Path, path: Path) -> Iterator[Edge]:
    """Every import in one file, resolved to the absolute module (or package) it names."""
    importer = module_name(root, path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Edge(importer, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                # `from pkg import mod` names a module when pkg/mod.py exists; otherwise an attribute of pkg.
                yield Edge(importer, f"{module}.{alias.name}", node.lineno)


def part_of(module: str) -> str | None:
    """The part a module belongs to, or None for a module outside Saigon."""
    top, _, rest = module.partition(".")
    if top == RUNTIME and rest:
        return f"{RUNTIME}.{rest.partition('.')[0]}"
    return top if top.startswith("saigon_") else None


def part_edges(roots: Iterable[Path]) -> dict[tuple[str, str], Edge]:
    """(importing part, imported part) -> the first import that makes the edge."""
    edges: dict[tuple[str, str], Edge] = {}
    for root in roots:
        for path in sorted(root.glob("saigon_*/**/*.py")):
            for edge in imports(root, path):
                src, dst = part_of(edge.importer), part_of(edge.imported)
                if src and dst and src != dst:
                    edges.setdefault((src, dst), edge)
    return edges


def top_level(edges: dict[tuple[str, str], Edge]) -> dict[tuple[str, str], Edge]:
    """The same graph between top-level packages only."""
    out: dict[tuple[str, str], Edge] = {}
    for (src, dst), edge in edges.items():
        a, b = src.partition(".")[0], dst.partition(".")[0]
        if a != b:
            out.setdefault((a, b), edge)
    return out


def find_cycle(edges: Iterable[tuple[str, str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    graph: dict[str, set[str]] = {}
    for src, dst in edges:
        graph.setdefault(src, set()).add(dst)
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def describe(cycle: list[str], edges: dict[tuple[str, str], Edge]) -> str:
    return "\n".join(f"  {a} -> {b}: {edges[(a, b)]}" for a, b in itertools.pairwise(cycle))
