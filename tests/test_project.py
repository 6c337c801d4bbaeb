"""Project-level promises: generated stubs match proto/, the core stays pure, the
layers and import directions hold, there is no import circle, and an installed
wheel holds every module.

The import checks read the source with ``ast`` (function-local imports too; imports
under ``if TYPE_CHECKING:`` never run and are left out), so they see every import a
module can make, not only those one run happens to reach.
"""

from __future__ import annotations

import ast
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

SOURCE_ROOTS = {"loyalty.server": "server", "loyalty.actors": "actors", "loyalty.clients": "clients",
                "loyalty.v1": "proto/loyalty/v1"}
"""The installed packages' folders in the tree (pyproject.toml's package-dir)."""

PURE_CORE = "loyalty.actors.ledger"
"""This package and its subpackages: the deterministic core, handed the time."""

CORE_FORBIDDEN = ("ray", "redis", "grpc", "grpc_status", "grpc_health", "grpc_reflection", "google.protobuf",
                  "google.rpc")
"""What the core may not load, directly or through any module it imports."""

CLIENTS_TESTING = "loyalty.clients.testing"
"""The SDK's in-process fake: it may use the ray-free gateway modules, nothing heavier."""


# --------------------------------------------------------------------------- the module graph


def modules_of(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Every module in the tree under SOURCE_ROOTS, by its dotted name."""
    modules = {}
    for package, directory in SOURCE_ROOTS.items():
        for path in sorted((root / directory).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root / directory).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(module: str, path: pathlib.Path) -> Iterator[tuple[str, ...]]:
    """Every import ``module`` makes, at any depth of its code, relative imports
    resolved: per imported name the dotted names it may be, most specific first
    (``from a import b`` is a.b if that is a module, else a name defined in a)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = [ast.parse(path.read_text(), str(path))]
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            nodes.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from ((alias.name,) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield from ((f"{base}.{alias.name}", base) if alias.name != "*" else (base,) for alias in node.names)
        nodes.extend(ast.iter_child_nodes(node))


class ModuleGraph:
    """Which module of the tree imports which (``edges``; importing a.b also runs the
    package a, which :meth:`loaded_by` counts but a circle does not), and the names
    each module imports from outside the tree (``external``)."""

    def __init__(self, root: pathlib.Path) -> None:
        self.modules = modules_of(root)
        roots = tuple(SOURCE_ROOTS)
        self.edges: dict[str, set[str]] = {name: set() for name in self.modules}
        self.external: dict[str, set[str]] = {name: set() for name in self.modules}
        for module, path in self.modules.items():
            for candidates in imported_names(module, path):
                imported = next((name for name in candidates if name in self.modules), None)
                if imported is not None:
                    if imported != module:
                        self.edges[module].add(imported)
                elif not candidates[-1].startswith(roots):
                    self.external[module].update(candidates)

    def loaded_by(self, module: str) -> set[str]:
        """Every module of the tree that importing ``module`` runs: what it imports,
        what those import, and the package __init__ of each on the way."""
        seen: set[str] = set()
        pending = [module]
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            pending.extend(self.edges[current])
            parent = current.rpartition(".")[0]
            if parent in self.modules:
                pending.append(parent)
        return seen

    def externals_loaded_by(self, module: str) -> dict[str, str]:
        """Every outside name importing ``module`` imports, with a module that imports it."""
        found = {}
        for loaded in sorted(self.loaded_by(module)):
            for name in self.external[loaded]:
                found.setdefault(name, loaded)
        # `from a.b import c` names a.b.c, which may be a class: a.b is what is loaded.
        return {name: importer for name, importer in found.items() if name.rpartition(".")[0] not in found}

    def cycles(self) -> list[list[str]]:
        """One import circle (as a path back to its start) per strongly connected
        group of modules that import each other."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        groups: list[list[str]] = []

        def visit(module: str) -> None:  # Tarjan's algorithm
            index[module] = low[module] = len(index)
            stack.append(module)
            on_stack.add(module)
            for other in sorted(self.edges[module]):
                if other not in index:
                    visit(other)
                    low[module] = min(low[module], low[other])
                elif other in on_stack:
                    low[module] = min(low[module], index[other])
            if low[module] == index[module]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

        for module in sorted(self.modules):
            if module not in index:
                visit(module)
        return [self._circle_in(group) for group in groups]

    def _circle_in(self, group: list[str]) -> list[str]:
        """A shortest path from the group's first module back to itself."""
        members = set(group)
        start = group[0]
        paths = {start: [start]}
        frontier = [start]
        while frontier:
            following = []
            for module in frontier:
                for other in sorted(self.edges[module] & members):
                    if other == start:
                        return [*paths[module], start]
                    if other not in paths:
                        paths[other] = [*paths[module], other]
                        following.append(other)
            frontier = following
        raise AssertionError(f"no circle in {group}")


def server_layers(root: pathlib.Path) -> list[set[str]]:
    """The layer order server/__init__.py states ("Layers, lowest first: a and b; c;
    ..."), as groups of the names directly under loyalty.server."""
    docstring = ast.get_docstring(ast.parse((root / "server" / "__init__.py").read_text())) or ""
    match = re.search(r"Layers, lowest first:(.*?)\.(\s|$)", " ".join(docstring.split()))
    assert match, "server/__init__.py must state the layers: 'Layers, lowest first: a and b; c; ...'"
    return [set(re.split(r",\s*|\s+and\s+", group.strip())) for group in match.group(1).split(";")]


@pytest.fixture(scope="module")
def graph() -> ModuleGraph:
    return ModuleGraph(ROOT)


# --------------------------------------------------------------------------- generated code


def test_generated_stubs_match_the_protos():
    result = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"run `python proto/generate.py`:\n{result.stderr}"


# --------------------------------------------------------------------------- import directions


def test_the_ledger_core_runs_without_ray_redis_or_grpc():
    # A fresh interpreter that refuses to import them, then uses the core.
    script = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"ray", "redis", "grpc", "google"}:
            raise ImportError("the core must not import " + name)
sys.meta_path.insert(0, Refuse())
from loyalty.actors.ledger import ShardCore, CompiledProgram, Program
from loyalty.actors.ledger import commands as c
core = ShardCore(CompiledProgram(Program()))
outcomes, record = core.apply_batch([c.EnrollMember("m", "r")], 1_000)
assert record is not None and len(outcomes) == 1
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_module_of_the_core_can_import_ray_redis_grpc_or_protobuf(graph):
    # Every import of every core module, wherever in the code, and everything those
    # imports load in turn.
    core = [module for module in graph.modules if module == PURE_CORE or module.startswith(PURE_CORE + ".")]
    assert core, f"no modules found for {PURE_CORE}"
    problems = [
        f"{module} loads {name} (imported by {importer})"
        for module in core
        for name, importer in sorted(graph.externals_loaded_by(module).items())
        if any(name == forbidden or name.startswith(forbidden + ".") for forbidden in CORE_FORBIDDEN)
    ]
    assert not problems, "\n".join(problems)


def test_the_shard_actor_imports_nothing_from_the_gateway():
    # actors/ is the lower layer: a shard process must not pull in server/ (gRPC,
    # auth, the gateway's rules store) to run.
    script = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "loyalty.server" or name.startswith("loyalty.server.") or name.split(".")[0] == "grpc":
            raise ImportError("the shard actor must not import " + name)
sys.meta_path.insert(0, Refuse())
import loyalty.actors.shard.actor
import loyalty.actors.shard.rules_source
import loyalty.actors.shard.channel_server
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_module_of_actors_imports_the_server(graph):
    problems = [
        f"{module} imports {other}"
        for module in sorted(graph.modules) if module.startswith("loyalty.actors")
        for other in sorted(graph.edges[module]) if other.startswith("loyalty.server")
    ]
    assert not problems, "\n".join(problems)


def test_the_sdk_loads_neither_the_server_nor_ray(graph):
    # The SDK installs on a POS till: the server and Ray are not there.
    problems = []
    for module in sorted(graph.modules):
        if not module.startswith("loyalty.clients") or module == CLIENTS_TESTING:
            continue
        loaded = graph.loaded_by(module)
        problems += [f"{module} loads {other}" for other in sorted(loaded) if other.startswith("loyalty.server")]
        problems += [f"{module} loads {name} (imported by {importer})"
                     for name, importer in sorted(graph.externals_loaded_by(module).items())
                     if name == "ray" or name.startswith("ray.")]
    assert not problems, "\n".join(problems)


def test_the_sdk_fake_loads_neither_ray_nor_redis(graph):
    # loyalty.clients.testing runs the real servicer in-process, without a cluster.
    problems = [
        f"{CLIENTS_TESTING} loads {name} (imported by {importer})"
        for name, importer in sorted(graph.externals_loaded_by(CLIENTS_TESTING).items())
        if name.partition(".")[0] in ("ray", "redis")
    ]
    assert not problems, "\n".join(problems)


def test_no_server_module_imports_a_higher_layer(graph):
    layers = server_layers(ROOT)
    rank = {name: position for position, group in enumerate(layers) for name in group}
    problems = []
    for module in sorted(graph.modules):
        parts = module.split(".")
        if parts[:2] != ["loyalty", "server"] or len(parts) < 3:
            continue
        if parts[2] not in rank:
            problems.append(f"{module}: {parts[2]} has no place in the layers of server/__init__.py")
            continue
        for other in sorted(graph.edges[module]):
            other_parts = other.split(".")
            if other_parts[:2] == ["loyalty", "server"] and len(other_parts) > 2 and other_parts[2] in rank:
                if rank[other_parts[2]] > rank[parts[2]]:
                    problems.append(f"{module} ({parts[2]}) imports {other} ({other_parts[2]}, a higher layer)")
    assert not problems, "\n".join(problems)


def test_no_import_circle_between_modules(graph):
    circles = [" -> ".join(circle) for circle in graph.cycles()]
    assert not circles, "import circles:\n" + "\n".join(circles)


# --------------------------------------------------------------------------- packaging


def test_a_built_wheel_ships_every_module_of_the_tree(tmp_path):
    # A plain (not editable) install: pip builds the wheel from a copy of the tree,
    # offline, with the setuptools already installed.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for directory in sorted({folder.split("/")[0] for folder in SOURCE_ROOTS.values()}):
        shutil.copytree(ROOT / directory, source / directory, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "--wheel-dir", str(tmp_path / "wheels"), str(source)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.endswith(".py")}
    expected = {
        "/".join(module.split(".")) + ("/__init__.py" if path.name == "__init__.py" else ".py")
        for module, path in modules_of(ROOT).items()
    }
    missing = sorted(expected - shipped)
    assert not missing, "not in the wheel (add their packages to [tool.setuptools] packages):\n" + "\n".join(missing)
