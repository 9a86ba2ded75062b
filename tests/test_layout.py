"""The code base keeps its shape: few top-level modules, no module over 500 lines, no import
cycle, no mixins, no reference to the retired design document, every package exporting ``__all__``.

Only files git knows about are looked at: tracked ones (still on disk) and untracked ones that
are not ignored (``git ls-files --cached --others --exclude-standard``), so build outputs and
virtualenvs never count. The checkers are plain functions; the ``test_checker_*`` tests run each
on a small broken input to show that it can fail.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edge_runtime", "exporter")
MAX_TOP_LEVEL_MODULES = 15
MAX_LINES = 500
# Spelled in two parts so that this file is not itself a reference to the retired document.
RETIRED_DOC = "DESIGN" + ".md"
PIPELINE = "edge_runtime.daemon.pipeline"
REMOTE_CONTROL = "edge_runtime.daemon.remote_control"
DAEMON_CLASS = (PIPELINE, "Daemon")

Graph = Mapping[str, Iterable[str]]


# --- files -----------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``git -C root ARGS`` with any inherited repository location (hooks set ``GIT_DIR``) dropped."""
    env = {k: v for k, v in os.environ.items() if k not in {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"}}
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def git_files(root: Path) -> list[str]:
    """Tracked files still on disk plus untracked files that are not ignored, as POSIX paths."""
    done = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    assert done.returncode == 0, f"git ls-files failed in {root}: {done.stderr}"
    return sorted({p for p in done.stdout.split("\0") if p and (root / p).is_file()})


@cache
def _project_files() -> tuple[str, ...]:
    return tuple(git_files(ROOT))


def python_files(files: Iterable[str], package: str) -> list[str]:
    return [p for p in files if p.startswith(f"{package}/") and p.endswith(".py")]


def module_name(path: str) -> str:
    """``edge_runtime/daemon/__init__.py`` -> ``edge_runtime.daemon`` (a package is its ``__init__``)."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_dirs(files: Iterable[str], package: str) -> list[str]:
    """The folders under ``package`` (itself included) that hold an ``__init__.py``."""
    return sorted(p.removesuffix("/__init__.py") for p in python_files(files, package) if p.endswith("/__init__.py"))


# --- checks 1 and 2: sizes ---------------------------------------------------------------------


def top_level_modules(files: Iterable[str], package: str) -> list[str]:
    """The ``.py`` files directly in ``package/``, ``__init__.py`` left out."""
    return [p for p in python_files(files, package) if p.count("/") == 1 and p != f"{package}/__init__.py"]


def long_files(root: Path, paths: Iterable[str], limit: int = MAX_LINES) -> dict[str, int]:
    """``{path: lines}`` for each file of ``paths`` over ``limit`` lines."""
    counts = {p: len((root / p).read_text(encoding="utf-8").splitlines()) for p in paths}
    return {p: n for p, n in counts.items() if n > limit}


# --- check 3: the import graph ---------------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


@dataclass
class ModuleImports:
    """The project modules one module imports: ``runtime`` (module level and inside functions
    alike) and ``typing_only`` (under ``if TYPE_CHECKING:``, never executed)."""

    runtime: set[str] = field(default_factory=set)
    typing_only: set[str] = field(default_factory=set)


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: frozenset[str]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.imports = ModuleImports()
        self._type_checking = 0

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._type_checking += 1
        for stmt in node.body:
            self.visit(stmt)
        self._type_checking -= 1
        for stmt in node.orelse:  # the ``else:`` of ``if TYPE_CHECKING:`` is what runs
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base_parts = self.package.split(".")
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join([*base_parts, node.module] if node.module else base_parts)
        else:
            base = node.module or ""
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            # ``from edge_runtime.x import Name``: the module ``edge_runtime.x.Name`` if there is one.
            self._add(submodule if submodule in self.known else base)

    def _add(self, name: str) -> None:
        if name.partition(".")[0] not in PACKAGES:
            return
        # ``import edge_runtime.x.y`` of a name that is not a module: the longest known prefix.
        while name and name not in self.known:
            name = name.rpartition(".")[0]
        if not name or name == self.module:
            return
        (self.imports.typing_only if self._type_checking else self.imports.runtime).add(name)


def collect_imports(source: str, module: str, is_package: bool, known: Iterable[str]) -> ModuleImports:
    """The project imports of one module's ``source``. A package ``__init__`` built with
    :func:`edge_runtime.lazy_exports.lazy_exports` imports nothing for its lazy names: only the
    import statements it runs count."""
    collector = _ImportCollector(module, is_package, frozenset(known))
    collector.visit(ast.parse(source))
    return collector.imports


@dataclass(frozen=True)
class ImportGraph:
    runtime: dict[str, set[str]]
    typing: dict[str, set[str]]  # runtime edges plus the ``if TYPE_CHECKING:`` ones
    paths: dict[str, str]  # module -> file


def build_import_graph(root: Path, files: Iterable[str]) -> ImportGraph:
    paths = {module_name(p): p for package in PACKAGES for p in python_files(files, package)}
    runtime: dict[str, set[str]] = {}
    typing: dict[str, set[str]] = {}
    for module, path in paths.items():
        found = collect_imports((root / path).read_text(encoding="utf-8"), module, path.endswith("/__init__.py"), paths)
        runtime[module] = found.runtime
        typing[module] = found.runtime | found.typing_only
    return ImportGraph(runtime, typing, paths)


@cache
def _project_graph() -> ImportGraph:
    return build_import_graph(ROOT, _project_files())


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, in a stable order."""
    nodes = sorted(set(graph) | {m for targets in graph.values() for m in targets})
    edges = {n: sorted(graph.get(n, ())) for n in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in nodes:
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges[node]
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted(components)


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per strongly connected component that has one."""
    found = []
    for component in strongly_connected(graph):
        members = set(component)
        start = component[0]
        if len(component) == 1 and start not in graph.get(start, ()):
            continue
        found.append(_cycle_through(graph, start, members))
    return found


def _cycle_through(graph: Graph, start: str, members: set[str]) -> list[str]:
    """The shortest path ``start -> ... -> start`` inside ``members`` (breadth first)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph.get(node, ())):
            if target not in members:
                continue
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if target not in came_from:
                came_from[target] = node
                queue.append(target)
    raise AssertionError(f"{start} is on no cycle")  # unreachable for a component with one


def describe_cycle(cycle: Sequence[str], paths: Mapping[str, str]) -> str:
    return " -> ".join(paths.get(m, m) for m in cycle)


# --- check 4: mixins ---------------------------------------------------------------------------


def mixin_classes(source: str) -> list[str]:
    """The classes of ``source`` whose name ends with ``Mixin`` (nested ones too)."""
    return [n.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name.endswith("Mixin")]


# --- check 5: the retired design document -----------------------------------------------------


def retired_doc_references(root: Path) -> list[str]:
    """``git grep -n`` output lines (``file:line:text``) naming the retired design document, in
    tracked files and untracked files that are not ignored."""
    done = _git(root, "grep", "-n", "--untracked", "-e", RETIRED_DOC)
    assert done.returncode in (0, 1), f"git grep failed in {root}: {done.stderr}"  # 1: no match
    return done.stdout.splitlines()


# --- check 6: ``__all__`` ----------------------------------------------------------------------


def defines_all(source: str) -> bool:
    """Whether ``source`` assigns ``__all__`` at module level: ``__all__ = [...]`` (or
    ``__all__: list[str] = ...``) or ``__getattr__, __all__ = lazy_exports(...)``."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id == "__all__" and node.value is not None:
                return True
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name) and target.id == "__all__":
                return True
            names = target.elts if isinstance(target, ast.Tuple) else []
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in names) and _calls_lazy_exports(node.value):
                return True
    return False


def _calls_lazy_exports(value: ast.expr) -> bool:
    if not isinstance(value, ast.Call):
        return False
    func = value.func
    return (isinstance(func, ast.Name) and func.id == "lazy_exports") or (
        isinstance(func, ast.Attribute) and func.attr == "lazy_exports"
    )


def missing_exports(package: str) -> list[str]:
    """The names of ``package.__all__`` that ``getattr`` cannot fetch."""
    module = importlib.import_module(package)
    missing = []
    for name in module.__all__:
        try:
            getattr(module, name)
        except AttributeError:
            missing.append(name)
    return missing


# --- the project -------------------------------------------------------------------------------


def test_edge_runtime_top_level_is_small() -> None:
    modules = top_level_modules(_project_files(), "edge_runtime")
    assert modules, "no module found at the top of edge_runtime/: is git listing the tree?"
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, (
        f"edge_runtime/ holds {len(modules)} top-level modules besides __init__.py "
        f"(at most {MAX_TOP_LEVEL_MODULES}); move some into a package: {', '.join(modules)}"
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_over_the_line_limit(package: str) -> None:
    paths = python_files(_project_files(), package)
    assert paths, f"no .py file found under {package}/"
    too_long = long_files(ROOT, paths)
    assert not too_long, f"modules over {MAX_LINES} lines: " + ", ".join(f"{p} ({n})" for p, n in too_long.items())


def test_no_runtime_import_cycle() -> None:
    graph = _project_graph()
    assert PIPELINE in graph.runtime and REMOTE_CONTROL in graph.runtime[PIPELINE], "the import graph looks empty"
    found = [describe_cycle(c, graph.paths) for c in cycles(graph.runtime)]
    assert not found, "import cycles (runtime imports, TYPE_CHECKING ones left out):\n" + "\n".join(found)


def test_no_typing_cycle_between_pipeline_and_remote_control() -> None:
    graph = _project_graph()
    component = next(c for c in strongly_connected(graph.typing) if PIPELINE in c)
    assert REMOTE_CONTROL not in component, (
        f"{graph.paths[PIPELINE]} and {graph.paths[REMOTE_CONTROL]} import each other once "
        "TYPE_CHECKING imports count: "
        + describe_cycle(_cycle_through(graph.typing, PIPELINE, set(component)), graph.paths)
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_no_mixin_classes(package: str) -> None:
    found = [
        f"{path}: {name}"
        for path in python_files(_project_files(), package)
        for name in mixin_classes((ROOT / path).read_text(encoding="utf-8"))
    ]
    assert not found, "mixin classes (compose an object instead):\n" + "\n".join(found)


def test_daemon_inherits_only_object() -> None:
    module, name = DAEMON_CLASS
    daemon = getattr(importlib.import_module(module), name)
    assert daemon.__bases__ == (object,), (
        f"{module.replace('.', '/')}.py: {name} inherits {[b.__qualname__ for b in daemon.__bases__]}, "
        "it should inherit only object"
    )


def test_no_reference_to_retired_design_doc() -> None:
    found = retired_doc_references(ROOT)
    assert not found, f"{len(found)} references to {RETIRED_DOC} remain:\n" + "\n".join(found)


@pytest.mark.parametrize("package_dir", package_dirs(_project_files(), "edge_runtime"))
def test_package_exports_all(package_dir: str) -> None:
    init = f"{package_dir}/__init__.py"
    assert defines_all((ROOT / init).read_text(encoding="utf-8")), (
        f"{init} defines no __all__ (a list, or __getattr__, __all__ = lazy_exports(...))"
    )
    package = package_dir.replace("/", ".")
    missing = missing_exports(package)
    assert not missing, f"{init}: __all__ names that getattr({package}, name) cannot fetch: {', '.join(missing)}"


# --- the checkers fail on broken input -------------------------------------------------------


def test_checker_counts_top_level_modules_and_lines(tmp_path: Path) -> None:
    files = ["edge_runtime/__init__.py", "edge_runtime/sub/a.py", *(f"edge_runtime/m{i}.py" for i in range(16))]
    assert len(top_level_modules(files, "edge_runtime")) == 16
    (tmp_path / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "ok.py").write_text("x = 1\n" * MAX_LINES)
    assert long_files(tmp_path, ["long.py", "ok.py"]) == {"long.py": MAX_LINES + 1}


def test_checker_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a"}, "f": {"f"}}
    assert cycles(graph) == [["a", "b", "c", "a"], ["f", "f"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert strongly_connected({"x": {"y"}, "y": {"x"}}) == [["x", "y"]]


def test_checker_reads_imports() -> None:
    known = {"edge_runtime", "edge_runtime.pkg", "edge_runtime.pkg.mod", "edge_runtime.pkg.other", "edge_runtime.lazy"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "import os\n"
        "from edge_runtime.lazy import lazy_exports\n"
        "from . import other\n"
        "if TYPE_CHECKING:\n"
        "    from edge_runtime.pkg.mod import Thing\n"
        "else:\n"
        "    import edge_runtime\n"
        "def f():\n"
        "    from edge_runtime.pkg import mod, Name\n"
        "__getattr__, __all__ = lazy_exports(__name__, {'mod': ('Thing',)})\n"
    )
    found = collect_imports(source, "edge_runtime.pkg", True, known)
    assert found.runtime == {"edge_runtime.lazy", "edge_runtime.pkg.other", "edge_runtime", "edge_runtime.pkg.mod"}
    assert found.typing_only == {"edge_runtime.pkg.mod"}
    lazy_only = (
        "from edge_runtime.lazy import lazy_exports\n__getattr__, __all__ = lazy_exports(__name__, {'mod': ('T',)})\n"
    )
    assert collect_imports(lazy_only, "edge_runtime.pkg", True, known).runtime == {"edge_runtime.lazy"}


def test_checker_finds_mixins_and_missing_all() -> None:
    assert mixin_classes("class A:\n    class LoggingMixin:\n        pass\n") == ["LoggingMixin"]
    assert mixin_classes("class Mixing:\n    pass\n") == []
    assert defines_all("__all__ = ['a']\n")
    assert defines_all("__getattr__, __all__ = lazy_exports(__name__, {})\n")
    assert not defines_all("from x import y\n")
    assert not defines_all("__getattr__, __all__ = other(__name__)\n")


def test_checker_greps_tracked_and_untracked_files(tmp_path: Path) -> None:
    assert _git(tmp_path, "init", "-q").returncode == 0
    (tmp_path / "clean.txt").write_text("nothing here\n")
    assert retired_doc_references(tmp_path) == []
    (tmp_path / "notes.md").write_text(f"see {RETIRED_DOC} section 6\n")
    assert retired_doc_references(tmp_path) == [f"notes.md:1:see {RETIRED_DOC} section 6"]
