"""The import graph of the shipped code (nimbus/, chalicelib/, app.py), read from the sources with ast.

An edge is a runtime import: at the top of a module or inside a function; imports under
`if TYPE_CHECKING:` are left out (they never run). `from package import module` is an edge to the
module, `from module import name` one to the module.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("nimbus", "chalicelib")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module of the project
    line: int
    in_function: bool
    commented: bool  # a comment on the import's lines, or on the line above its block


@dataclass
class ImportGraph:
    modules: dict[str, Path]
    imports: list[Import] = field(default_factory=list)

    def edges(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {name: set() for name in self.modules}
        for item in self.imports:
            if item.target != item.source:
                found[item.source].add(item.target)
        return found

    def cycles(self) -> list[list[str]]:
        """The strongly connected components of more than one module (Tarjan's algorithm)."""
        return _components(self.edges())


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def load() -> ImportGraph:
    paths = [p for package in SHIPPED for p in (ROOT / package).rglob("*.py")] + [ROOT / "app.py"]
    graph = ImportGraph({module_name(p): p for p in paths})
    for name, path in graph.modules.items():
        source = path.read_text()
        _Visitor(graph, name, path.name == "__init__.py", source.splitlines()).visit(ast.parse(source))
    return graph


class _Visitor(ast.NodeVisitor):
    def __init__(self, graph: ImportGraph, module: str, is_package: bool, lines: list[str]):
        self.graph, self.module, self.lines, self.depth = graph, module, lines, 0
        self.package = module if is_package else module.rpartition(".")[0]

    def visit_FunctionDef(self, node) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self._record(node, [alias.name for alias in node.names])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        self._record(node, [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in self.graph.modules else origin
                            for alias in node.names])

    def _record(self, node, names: list[str]) -> None:
        commented = self._commented(node)
        for name in dict.fromkeys(names):
            target = _resolve(name, self.graph.modules)
            if target is not None:
                self.graph.imports.append(Import(self.module, target, node.lineno, self.depth > 0, commented))
            elif self.depth > 0:  # a third-party or standard module imported late: it needs its reason too
                self.graph.imports.append(Import(self.module, f"<external {name}>", node.lineno, True, commented))

    def _commented(self, node) -> bool:
        own = self.lines[node.lineno - 1:node.end_lineno]
        if any("#" in line for line in own):
            return True
        above = node.lineno - 2
        while above >= 0 and self.lines[above].strip().startswith(("import ", "from ")):
            if "#" in self.lines[above]:
                return True  # one comment serves a block of imports
            above -= 1
        return above >= 0 and "#" in self.lines[above]  # a comment line, or one ending the line above


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _components(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found
