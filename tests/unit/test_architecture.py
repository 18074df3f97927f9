"""The package's structure, checked from its source (#14 acceptance 1 and the doctests).

- The import graph of ``mcpclient_auth`` has no cycle at run time: every ``import`` /
  ``from ... import`` counts, including those inside functions, except under ``if TYPE_CHECKING:``.
- No module calls another module's ``_private`` function or method (a call ``x._name(...)`` whose
  method is not defined in the calling module), nor imports a private name other than a module.
- The docstring examples run (``doctest``), so they cannot rot.
"""

from __future__ import annotations

import ast
import doctest
import importlib
from pathlib import Path

import pytest

import mcpclient_auth

PACKAGE = Path(mcpclient_auth.__file__).parent


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(inner) for inner in ast.walk(child))
    return skipped


def _imports(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package[: len(package) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                target = candidate if candidate in MODULES else base
                if target in MODULES:
                    targets.add(target)
        elif isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names if alias.name in MODULES)
    targets.discard(name)
    return targets


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_import_graph_has_no_cycle() -> None:
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert "mcpclient_auth._calls" in graph["mcpclient_auth._hooks"]  # the walk sees real edges
    assert _cycles(graph) == []


def test_the_request_path_imports_downward_only() -> None:
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    for lower in ("mcpclient_auth._calls", "mcpclient_auth._journal", "mcpclient_auth._context"):
        assert not graph[lower] & {"mcpclient_auth.run", "mcpclient_auth._hooks", "mcpclient_auth.factory"}


def _private_crossings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined = {
        node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            receiver = ast.unparse(node.func.value)
            if (
                attr.startswith("_")
                and not attr.startswith("__")
                and receiver not in ("self", "cls")
                and not receiver.startswith("super(")
                and attr not in defined
            ):
                found.append(f"{path.name}:{node.lineno}: {receiver}.{attr}()")
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                module = f"{node.module}.{alias.name}" if node.module else alias.name
                is_module = any(name.endswith(module.lstrip(".")) for name in MODULES)
                if private and not is_module:
                    found.append(f"{path.name}:{node.lineno}: imports {alias.name}")
    return found


def test_no_module_calls_another_modules_private_functions() -> None:
    crossings = [hit for path in MODULES.values() for hit in _private_crossings(path)]
    assert crossings == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"


def test_the_docstring_run_covers_every_module_and_finds_the_examples() -> None:
    # Every .py file of the package (subpackages included) is a parameter of the test above, and the
    # examples it runs are really found there (not silently skipped).
    assert set(MODULES.values()) == set(PACKAGE.rglob("*.py"))
    finder = doctest.DocTestFinder(exclude_empty=True)
    with_examples = {
        name
        for name in MODULES
        if any(test.examples for test in finder.find(importlib.import_module(name), name))
    }
    assert {
        "mcpclient_auth._encoding",
        "mcpclient_auth._hooks._httpx",
        "mcpclient_auth.endpoints",
        "mcpclient_auth.jsonrpc",
        "mcpclient_auth.refusal",
    } <= with_examples
