"""The package's shape: every module imports on its own, and no two modules import each other.

An import cycle works or breaks by the order modules happen to be imported in, and one
hidden in a function body (a "lazy import") is a cycle all the same: it only moves the
failure, or the partly initialised module, to run time. So the graph counts every import
statement, wherever it stands, except under `if TYPE_CHECKING:` (never run).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mpjobs

PACKAGE = Path(mpjobs.__file__).parent


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its __init__.py)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `name` imports, in function bodies too.

    `from pkg import mod` is an import of `pkg.mod` when that is a module, else of `pkg`.
    The implicit import of a module's parent packages is not counted: every submodule
    has it, and a package that imports its own submodules is not a cycle.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit_node(other)
            else:
                visit_node(child)

    def visit_node(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:
                    found.add(f"{source}.{alias.name}")
                elif source in modules:
                    found.add(source)
        else:
            visit(node)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := walk(dep)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := walk(start)) is not None:
            return cycle
    return None


def test_no_import_cycle_even_in_function_bodies() -> None:
    files = module_files()
    graph = {name: imports_of(name, path, set(files)) for name, path in files.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_find_cycle_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_lazy_import_counts_and_type_checking_does_not(tmp_path: Path) -> None:
    source = textwrap.dedent(
        """
        from typing import TYPE_CHECKING
        from pkg import b
        if TYPE_CHECKING:
            from pkg.c import C
        def f():
            from pkg.d import thing
            import pkg.e
        """
    )
    path = tmp_path / "a.py"
    path.write_text(source)
    modules = {"pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.e", "pkg"}
    assert imports_of("pkg.a", path, modules) == {"pkg.b", "pkg.d", "pkg.e"}


_IMPORT_EACH = """
import importlib, os, sys, traceback
# Third-party and stdlib modules the package uses, once, so that each child only pays
# for mpjobs itself; nothing of mpjobs is imported here.
for name in ("asyncio", "cloudpickle", "psutil", "sqlite3", "zoneinfo", "filelock", "json",
             "croniter", "dataclasses", "inspect", "logging", "socket", "selectors"):
    importlib.import_module(name)
# Optional extras, when installed (Django is heavy: each child would import it afresh).
for name in ("django.db.models", "django.core.management.base", "django_tasks", "psycopg"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
assert not [m for m in sys.modules if m.startswith("mpjobs")]
failed, running = [], {}
def reap():
    pid, status = os.wait()
    if status != 0:
        failed.append(running[pid])
    del running[pid]
for name in sys.argv[1:]:
    if len(running) >= 2:  # two children at a time: the machine's two cores
        reap()
    pid = os.fork()
    if pid == 0:  # a child with nothing of mpjobs imported yet
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    running[pid] = name
while running:
    reap()
print(" ".join(sorted(failed)))
"""


@pytest.mark.timeout(300)  # a hundred imports of most of the package: a minute when loaded
def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    """Each module imported before any other of the package, as a worker or a CLI might.

    One interpreter forks a child per module before it imports anything of mpjobs, so
    each child starts from a clean slate without paying an interpreter start per module.
    (`mpjobs.__main__` is left out: importing it runs the CLI.)
    """
    names = [name for name in sorted(module_files()) if not name.endswith(".__main__")]
    r = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, *names], capture_output=True, text=True, timeout=280
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"cannot be imported first: {r.stdout}\n{r.stderr}"


def test_running_a_class_handler_does_not_load_config_files() -> None:
    """A worker resolving `mpjobs.config:run_class_handler` gets no parser and no checks.

    The path is stored in the jobs of class handlers, so it must also stay the same.
    """
    from mpjobs.config.apply import CLASS_RUNNER

    assert CLASS_RUNNER == "mpjobs.config:run_class_handler"
    code = textwrap.dedent(
        """
        import sys
        from mpjobs import serialization
        run = serialization.resolve_path("mpjobs.config:run_class_handler")
        assert run.__name__ == "run_class_handler", run
        print(sorted(m for m in sys.modules if m.startswith("mpjobs.config")))
        print(sorted(m for m in ("tomllib", "tomli", "yaml") if m in sys.modules))
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["['mpjobs.config', 'mpjobs.config.run']", "[]"]
