"""The package's shape, checked: imports flow one way and modules stay readable.

Run ``pytest tests/unit/test_architecture.py -q`` to see it. Every import in
``sqlstream/`` counts, including those inside functions and under ``TYPE_CHECKING``.
The layers (see ``../shared/STYLE.md`` and ``docs/ARCHITECTURE.md``):

    leaf        errors, hidden, durations, sizes, batches, changelog, paths, settings,
                failure_isolation: usable from anywhere, import only other leaves
    sql         the dialect and statements: leaves only
    connectors  leaves only: no SQL, plans or operators
    operators   leaves and connectors' data types
    udf         leaves, sql (types), connectors, operators
    plan        leaves, sql, connectors, operators, udf
    runtime     leaves, connectors, operators, udf: not plans, not SQL
    app         session, introspection, testing, pipeline_tests, the package: all but cli
    cli         everything; the only layer that imports rich or prompt_toolkit
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import sqlstream

PACKAGE = pathlib.Path(sqlstream.__file__).parent
LEAVES = {"errors", "hidden", "durations", "sizes", "batches", "changelog", "paths", "settings", "failure_isolation"}
ALLOWED = {
    "leaf": {"leaf"},
    "sql": {"leaf", "sql"},
    "connectors": {"leaf", "connectors"},
    "operators": {"leaf", "connectors", "operators"},
    "udf": {"leaf", "sql", "connectors", "operators", "udf"},
    "plan": {"leaf", "sql", "connectors", "operators", "udf", "plan"},
    "runtime": {"leaf", "connectors", "operators", "udf", "runtime"},
    "app": {"leaf", "sql", "connectors", "operators", "udf", "plan", "runtime", "app"},
    "cli": {"leaf", "sql", "connectors", "operators", "udf", "plan", "runtime", "app", "cli"},
}
TERMINAL_LIBRARIES = ("rich", "prompt_toolkit")
MAX_LINES = 520  # "about 500": a longer module says why in its docstring ("long because ...")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "app"
    if parts[1] in LEAVES:
        return "leaf"
    if parts[1] in ALLOWED:
        return parts[1]
    return "app"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import in ``module``, wherever it stands."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            out.append((target, node.lineno))
            out += [(f"{target}.{alias.name}", node.lineno) for alias in node.names if f"{target}.{alias.name}" in MODULES]
    return out


def internal_graph() -> dict[str, set[str]]:
    """module -> the sqlstream modules it imports (a package's ``__init__`` counts as the package)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _ in imports_of(module):
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _is_package_init_edge(source: str, target: str) -> bool:
    """A package's ``__init__`` re-exporting its own submodules is not a circle of design."""
    return MODULES[source].name == "__init__.py" and target.startswith(source + ".")


def test_no_import_cycles():
    graph = internal_graph()
    without_reexports = {m: {t for t in ts if not _is_package_init_edge(m, t)} for m, ts in graph.items()}
    assert cycles(without_reexports) == []


def test_imports_follow_the_layers():
    wrong = []
    for module in MODULES:
        own = layer(module)
        for target, line in imports_of(module):
            top = target.split(".")[0]
            if top in TERMINAL_LIBRARIES and own != "cli":
                wrong.append(f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}: {module} ({own}) imports {target}")
            if top != "sqlstream" or target not in MODULES or target == "sqlstream":
                continue
            if layer(target) not in ALLOWED[own]:
                where = MODULES[module].relative_to(PACKAGE.parent)
                wrong.append(f"{where}:{line}: {module} ({own}) imports {target} ({layer(target)})")
    assert wrong == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_short_or_say_why(module):
    text = MODULES[module].read_text(encoding="utf-8")
    lines = text.count("\n")
    if lines <= MAX_LINES:
        return
    docstring = ast.get_docstring(ast.parse(text)) or ""
    assert "long because" in docstring, f"{module} has {lines} lines; split it or say why in its docstring"


def test_the_checker_sees_a_cycle_and_a_backwards_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert layer("sqlstream.connectors.file") == "connectors"
    assert "plan" not in ALLOWED[layer("sqlstream.runtime.driver")]
    assert layer("sqlstream.hidden") == "leaf"
