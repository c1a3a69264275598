"""The import graph, read statically from every .py file of the checkout (nothing is imported).

Rules held here:
  a. production code (`remedium` except `remedium.demo`, `workflows`, `activities`, the
     top-level `worker.py`) imports nothing from `tests` or `remedium.demo`; the one exception
     is `remedium.cli`, which may import `remedium.demo` inside a function (`demo`, `up --demo`);
  b. `scripts/` imports nothing from `tests`;
  c. the product's modules (`remedium` with its demo, `workflows`, `activities`, `worker`)
     import each other without a cycle (imports under `if TYPE_CHECKING:` are not edges);
  d. `workflows/` imports no client library and nothing from `activities` (the workflow calls
     activities by name, so it never needs their modules, not even through
     `workflow.unsafe.imports_passed_through()`).

Every import counts, at module level and inside functions; for a, b and d also those under
`if TYPE_CHECKING:` (a type-only dependency is still a dependency). `import a.b` is an edge to `a.b`;
`from a import b` is an edge to `a.b` when that is a module of the checkout, else to `a`;
relative imports are resolved against the importing module. A package's `__init__` importing
its submodules is an ordinary edge, and so is a submodule importing its own package (`from
remedium.models import X` inside remedium/models/incident.py): a cycle when that `__init__`
imports the submodule.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {".git", ".venv", "venv", "build", "dist", "node_modules", "__pycache__"}
SKIPPED_PATHS = {Path("tests") / "histories"}

PRODUCT_ROOTS = ("remedium", "workflows", "activities", "worker")
DEMO = "remedium.demo"
CLI = "remedium.cli"
CLIENT_LIBRARIES = ("httpx", "kubernetes", "slack_sdk", "jira", "yaml", "requests", "aiohttp", "fastapi")


@dataclass(frozen=True)
class Import:
    """One imported name: who imports it, where, what it resolves to and in which context."""

    source: str  # the importing module, dotted
    path: str  # its file, relative to the checkout
    line: int
    statement: str  # the import as written, one name of it
    target: str  # the module the import is an edge to
    in_function: bool  # inside a def (runs when called, not when the module is imported)
    type_checking: bool  # under `if TYPE_CHECKING:` (never runs)
    passed_through: bool  # inside `with workflow.unsafe.imports_passed_through():`

    def __str__(self) -> str:
        where = "in a function" if self.in_function else "at module level"
        return f"{self.path}:{self.line}: `{self.statement}` ({where}) -> {self.target}"


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def within_any(module: str, packages: Iterable[str]) -> bool:
    return any(within(module, p) for p in packages)


# ------------------------------------------------------------------ scanning


def module_name(relative: Path) -> tuple[str, bool]:
    """`remedium/models/__init__.py` -> ("remedium.models", True); `worker.py` -> ("worker", False)."""
    parts = list(relative.with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def python_files(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        here = Path(folder).relative_to(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in SKIPPED_DIRS
            and not d.startswith(".")
            and not d.endswith(".egg-info")
            and here / d not in SKIPPED_PATHS
        )
        yield from (here / f for f in sorted(files) if f.endswith(".py"))


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _passes_through(node: ast.With | ast.AsyncWith) -> bool:
    return any(
        isinstance(item.context_expr, ast.Call)
        and isinstance(item.context_expr.func, ast.Attribute)
        and item.context_expr.func.attr == "imports_passed_through"
        for item in node.items
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, source: str, is_package: bool, path: str, modules: frozenset[str]) -> None:
        self.source = source
        self.package = source if is_package else source.rpartition(".")[0]
        self.path = path
        self.modules = modules
        self.found: list[Import] = []
        self.in_function = False
        self.type_checking = False
        self.passed_through = False

    def _add(self, node: ast.stmt, statement: str, target: str) -> None:
        self.found.append(
            Import(
                self.source,
                self.path,
                node.lineno,
                statement,
                target,
                self.in_function,
                self.type_checking,
                self.passed_through,
            )
        )

    def _inside(self, nodes: Iterable[ast.AST], **flags: bool) -> None:
        saved = (self.in_function, self.type_checking, self.passed_through)
        for name, value in flags.items():
            setattr(self, name, value)
        for node in nodes:
            self.visit(node)
        self.in_function, self.type_checking, self.passed_through = saved

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._inside(node.body, in_function=True)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._inside(node.body, in_function=True)

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._inside(node.body, type_checking=True)
            self._inside(node.orelse)
        else:
            self.generic_visit(node)

    def visit_With(self, node: ast.With) -> None:
        self._inside(node.body, passed_through=self.passed_through or _passes_through(node))

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        self._inside(node.body, passed_through=self.passed_through or _passes_through(node))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, f"import {alias.name}", alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._resolve(node.module, node.level)
        written = "." * node.level + (node.module or "")
        for alias in node.names:
            candidate = f"{base}.{alias.name}" if base else alias.name
            target = candidate if alias.name != "*" and candidate in self.modules else base
            self._add(node, f"from {written} import {alias.name}", target)

    def _resolve(self, module: str | None, level: int) -> str:
        if level == 0:
            return module or ""
        parts = self.package.split(".") if self.package else []
        if level - 1 > len(parts):
            raise AssertionError(f"{self.path}: relative import beyond the top-level package")
        parts = parts[: len(parts) - (level - 1)]
        return ".".join([*parts, *([module] if module else [])])


def imports_in(
    text: str, source: str, *, is_package: bool = False, path: str = "<text>", modules: Iterable[str] = ()
) -> list[Import]:
    """Every import in one module's text; `modules` are the dotted names that are modules."""
    collector = _Collector(source, is_package, path, frozenset(modules))
    collector.visit(ast.parse(text, filename=path))
    return collector.found


@dataclass(frozen=True)
class Checkout:
    modules: frozenset[str]
    imports: tuple[Import, ...]


@cache
def checkout() -> Checkout:
    files = {rel: module_name(rel) for rel in python_files(REPO)}
    modules = frozenset(name for name, _ in files.values())
    found: list[Import] = []
    for rel, (name, is_package) in files.items():
        text = (REPO / rel).read_text(encoding="utf-8")
        found.extend(imports_in(text, name, is_package=is_package, path=rel.as_posix(), modules=modules))
    return Checkout(modules, tuple(found))


# ------------------------------------------------------------------ cycles


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's components (iteratively), each sorted; only those that hold a cycle."""
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})
    edges = {n: sorted(set(graph.get(n, ()))) for n in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges[node]
            if position < len(targets):
                work.append((node, position + 1))
                target = targets[position]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    components.append(sorted(component))
    return sorted(components)


def one_cycle(graph: Mapping[str, Iterable[str]], component: list[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target in sorted(set(graph.get(node, ()))):
                if target not in members:
                    continue
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {component}")


# ------------------------------------------------------------------ rules


def is_product(module: str) -> bool:
    return within_any(module, PRODUCT_ROOTS)


def is_production(module: str) -> bool:
    return is_product(module) and not within(module, DEMO)


def graph_of(imports: Iterable[Import]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for i in imports:
        if not i.type_checking:
            graph.setdefault(i.source, set()).add(i.target)
    return graph


def report(violations: list[Import], rule: str) -> str:
    return f"{rule}; {len(violations)} import(s):\n" + "\n".join(f"  {v}" for v in violations)


def breaks_production_rule(i: Import) -> bool:
    """Rule a: production code imports nothing from tests/ or the demo (but remedium.cli in a function)."""
    if not is_production(i.source):
        return False
    if within(i.target, "tests"):
        return True
    return within(i.target, DEMO) and not (within(i.source, CLI) and i.in_function)


def breaks_scripts_rule(i: Import) -> bool:
    """Rule b: scripts/ imports nothing from tests/."""
    return within(i.source, "scripts") and within(i.target, "tests")


def breaks_workflows_rule(i: Import) -> bool:
    """Rule d: workflows/ imports no client library and no activity module, passed through or not."""
    return within(i.source, "workflows") and within_any(i.target, (*CLIENT_LIBRARIES, "activities"))


def product_cycles(imports: Iterable[Import], modules: frozenset[str]) -> list[str]:
    """Rule c: each cycle among the product's modules, with the imports that make it up."""
    product = [i for i in imports if is_product(i.source) and is_product(i.target) and i.target in modules]
    graph = graph_of(product)
    lines: list[str] = []
    for component in strongly_connected(graph):
        members = set(component)
        lines.append(f"cycle among {len(component)} module(s): {' -> '.join(one_cycle(graph, component))}")
        lines.extend(
            f"    {i}" for i in product if not i.type_checking and i.source in members and i.target in members
        )
    return lines


# ------------------------------------------------------------------ controls


def test_scanner_positive_controls() -> None:
    """The scanner sees every kind of import it is asked to see, so the rules below cannot pass empty."""
    modules = {"pkg", "pkg.sub", "pkg.sub.leaf", "pkg.other"}
    text = """
from __future__ import annotations
from typing import TYPE_CHECKING
import pkg.other
from . import leaf
from .leaf import helper
from .. import other
from pkg import sub, not_a_module
if TYPE_CHECKING:
    from pkg.other import Hint
else:
    import json
with workflow.unsafe.imports_passed_through():
    from pkg.other import Model
class Holder:
    import csv
async def later():
    def inner():
        import pkg.sub.leaf
"""
    found = {
        (i.statement, i.target): i for i in imports_in(text, "pkg.sub", is_package=True, modules=modules)
    }
    assert found[("import pkg.other", "pkg.other")].in_function is False
    assert ("from . import leaf", "pkg.sub.leaf") in found
    assert ("from .leaf import helper", "pkg.sub.leaf") in found
    assert ("from .. import other", "pkg.other") in found
    assert ("from pkg import sub", "pkg.sub") in found
    assert ("from pkg import not_a_module", "pkg") in found
    assert found[("from pkg.other import Hint", "pkg.other")].type_checking is True
    assert found[("import json", "json")].type_checking is False
    assert found[("from pkg.other import Model", "pkg.other")].passed_through is True
    assert found[("import csv", "csv")].in_function is False
    assert found[("import pkg.sub.leaf", "pkg.sub.leaf")].in_function is True
    # A plain module resolves its relative imports against its own package.
    (plain,) = imports_in("from . import other", "pkg.sub.leaf", modules=modules)
    assert plain.target == "pkg.sub"


def test_cycle_finder_positive_control() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": [], "s": ["s"]}
    assert strongly_connected(graph) == [["a", "b", "c"], ["s"]]
    assert one_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert strongly_connected({"a": ["b"], "b": []}) == []
    # A submodule importing its own package is a cycle when the package's __init__ imports it.
    modules = {"pkg", "pkg.mod"}
    edges = [
        *imports_in("from pkg.mod import X", "pkg", is_package=True, modules=modules),
        *imports_in("from pkg import Y", "pkg.mod", modules=modules),
    ]
    assert strongly_connected(graph_of(edges)) == [["pkg", "pkg.mod"]]


def test_checkout_is_scanned() -> None:
    scanned = checkout()
    assert {"remedium", "remedium.models", "workflows.incident", "activities", "worker"} <= scanned.modules
    assert "tests.histories" not in scanned.modules
    edges = {(i.source, i.target) for i in scanned.imports}
    assert ("workflows.incident", "remedium.models") in edges
    assert len(scanned.imports) > 500


def test_rules_positive_controls() -> None:
    """Each rule flags a synthetic import that breaks it and passes its allowed neighbours."""
    modules = frozenset({"remedium", "remedium.cli", "remedium.demo", "remedium.demo.run", "tests"})

    def scan(text: str, source: str) -> list[Import]:
        found = imports_in(text, source, modules=modules)
        assert found, text
        return found

    def flags(rule: Callable[[Import], bool], text: str, source: str) -> bool:
        verdicts = {rule(i) for i in scan(text, source)}
        assert len(verdicts) == 1, text
        return verdicts.pop()

    in_function = "def f():\n    from remedium.demo.run import run_demo\n"
    typed = "if TYPE_CHECKING:\n    from remedium.demo.run import X\n"
    assert not flags(breaks_production_rule, in_function, "remedium.cli.stack_cmd")
    assert flags(breaks_production_rule, in_function, "remedium.ingress.app")
    assert flags(breaks_production_rule, "from remedium.demo import run", "remedium.cli.main")
    assert flags(breaks_production_rule, typed, "remedium.cli.main")
    assert flags(breaks_production_rule, "import tests.support", "worker")
    assert flags(breaks_production_rule, "def f():\n    import tests\n", "activities.http")
    assert not flags(breaks_production_rule, "import tests.support", "remedium.demo.run")
    assert flags(breaks_scripts_rule, "from tests.support import start", "scripts.record")
    assert not flags(breaks_scripts_rule, "from remedium.demo import run", "scripts.record")
    passed = "with workflow.unsafe.imports_passed_through():\n    from activities import http\n"
    assert flags(breaks_workflows_rule, passed, "workflows.incident")
    assert flags(breaks_workflows_rule, "import kubernetes.client", "workflows.incident")
    assert flags(breaks_workflows_rule, "from yaml import safe_load", "workflows.incident")
    assert not flags(breaks_workflows_rule, "from remedium.models import Alert", "workflows.x")
    cycle = [*scan("from remedium.cli import x", "remedium"), *scan("import remedium", "remedium.cli")]
    assert (
        product_cycles(cycle, modules)[0] == "cycle among 2 module(s): remedium -> remedium.cli -> remedium"
    )
    typed_only = [
        *scan("import remedium.cli", "remedium"),
        *scan("if TYPE_CHECKING:\n    import remedium\n", "remedium.cli"),
    ]
    assert product_cycles(typed_only, modules) == []


# ------------------------------------------------------------------ the checkout


def test_production_imports_nothing_from_tests_or_the_demo() -> None:
    violations = [i for i in checkout().imports if breaks_production_rule(i)]
    assert not violations, report(
        violations,
        "production code imports nothing from tests/ or remedium.demo"
        " (remedium.cli may import remedium.demo inside a function only)",
    )


def test_scripts_import_nothing_from_tests() -> None:
    violations = [i for i in checkout().imports if breaks_scripts_rule(i)]
    assert not violations, report(violations, "scripts/ import nothing from tests/")


def test_no_import_cycle_in_the_product() -> None:
    scanned = checkout()
    lines = product_cycles(scanned.imports, scanned.modules)
    cycles = sum(line.startswith("cycle") for line in lines)
    assert not lines, f"{cycles} import cycle(s) among the product's modules:\n" + "\n".join(lines)


def test_workflows_import_no_client_library_and_no_activity_module() -> None:
    violations = [i for i in checkout().imports if breaks_workflows_rule(i)]
    assert not violations, report(
        violations, f"workflows/ import no client library ({', '.join(CLIENT_LIBRARIES)}) and no activities"
    )
