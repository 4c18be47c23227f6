"""The shape of the package: no import circles, production never imports the test-data generator, a light CLI."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "autoreg"


def _imports() -> dict[str, set[str]]:
    """Module name -> autoreg modules it imports anywhere (top level or inside functions)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        name = path.stem
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    found.add(node.module.split(".")[0])
                elif node.level == 1:  # from . import usid
                    found.update(alias.name for alias in node.names)
                elif node.module and node.module.startswith("autoreg."):
                    found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("autoreg."))
        graph[name] = found - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_among_modules():
    graph = _imports()
    assert {"pipeline", "warp", "datatypes", "io", "usid", "_atomic"} <= set(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_cycle_finder_finds_a_planted_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_only_fixture_code_imports_the_generator():
    importers = sorted(m for m, deps in _imports().items() if "synthetic" in deps)
    assert importers == ["fixture"], importers


def test_leaf_modules_import_nothing_of_ours():
    graph = _imports()
    for leaf in ("_atomic", "geometry", "units", "vocabulary", "errors", "_version"):
        assert graph[leaf] <= {"errors"} if leaf != "errors" else not graph[leaf], (leaf, graph[leaf])


def test_the_command_line_starts_without_heavy_libraries():
    code = ("import sys, autoreg.cli; heavy = [m for m in ('numpy', 'cv2', 'skimage', 'h5py', 'matplotlib', "
            "'pyUSID', 'scipy', 'dask') if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
