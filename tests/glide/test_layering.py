"""glide imports only downwards: it never imports glidebench, and its modules' import graph has no cycle.

Every ``.py`` under ``glide/`` is parsed (nothing is imported) and every ``import`` / ``from ... import`` in it
counts, at any depth: module level, inside functions (lazy imports hide circles, they do not remove them),
inside ``if``/``try`` blocks. Relative imports are resolved against the importing module's package.

How an import becomes edges of the graph (nodes are glide's modules; a package is its ``__init__``):

- ``import a.b.c`` and ``from a.b.c import x`` are an edge to ``a.b.c``; if ``a.b.c.x`` is itself a module
  (``from .diffusion import samplers``), also an edge to ``a.b.c.x``.
- Importing ``a.b.c`` runs the ``__init__`` of every package above it, so it is also an edge to each of those
  packages (``a.b``; ``a`` is ``glide`` itself), EXCEPT the packages that contain the importing module: they
  are already being initialised when it runs. So a package ``__init__`` importing its own submodules
  (``glide/clip/__init__.py`` re-exporting ``glide.clip.model``) and a submodule importing its siblings
  (``glide/clip/model.py`` importing ``.config``) are normal, while ``glide.checkpoints`` importing
  ``glide.clip.io`` depends on ``glide.clip`` (the ``__init__``) too, and its re-exports count.
- Imports of other distributions (torch, safetensors, ...) are not nodes.

The rules checked:

1. No module imports ``glidebench`` (the benchmark sits above glide), and no string in glide names a
   ``glidebench`` module or ``module:callable`` factory path (e.g. a default recipe dataset).
2. The graph has no cycle (each cycle found is printed as a path).
3. Front ends sit at the top: ``glide.train.*`` (training), ``glide.pipeline`` (sampling API),
   ``glide.compat`` (the glide-text2im API) and ``glide.__main__`` (the CLI) are imported by no core module,
   and by no other front end except the CLI's use of the pipeline and each front end's own modules.
4. The leaf modules (the atomic writer and SHA-256 helper, the image conversions) import nothing from glide.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GLIDE = ROOT / "glide"

LEAVES = ("glide.fileio", "glide.images")
FRONT_ENDS = ("glide.train", "glide.pipeline", "glide.compat", "glide.__main__")
ALLOWED_FRONT_END_EDGES = {("glide.__main__", "glide.pipeline")}
_GLIDEBENCH_PATH = re.compile(r"glidebench(\.[A-Za-z_]\w*)+(:[A-Za-z_][\w.]*)?|glidebench:[A-Za-z_][\w.]*")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(package: Path = GLIDE) -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is_package) for every .py under the package directory ``package``."""
    root = package.parent
    return {module_name(p, root): (p, p.name == "__init__.py") for p in sorted(package.rglob("*.py"))}


def imported_names(path: Path, module: str, is_package: bool) -> list[tuple[str, list[str], int]]:
    """(absolute module, names imported from it, line) for every import statement in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top package")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append((target, [a.name for a in node.names], node.lineno))
    return found


def import_graph(modules: dict[str, tuple[Path, bool]]) -> dict[str, dict[str, int]]:
    """module -> {imported glide module: first line}, by the rules in the module docstring."""
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, (path, is_package) in modules.items():
        own = module.split(".") if is_package else module.split(".")[:-1]
        enclosing = {".".join(own[:i]) for i in range(1, len(own) + 1)}
        for target, names, line in imported_names(path, module, is_package):
            targets = [target] + [f"{target}.{n}" for n in names]
            parts = target.split(".")
            targets += [".".join(parts[:i]) for i in range(1, len(parts))]  # the packages above it
            for t in targets:
                if t in modules and t != module and t not in enclosing:
                    graph[module].setdefault(t, line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The groups of modules that import each other in a circle (Tarjan's components of more than one)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return components


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (a closed path) per group of :func:`strongly_connected`."""
    components = strongly_connected(graph)
    cycles = []
    for comp in components:  # a shortest path back to the start, for the message
        members, start = set(comp), min(comp)
        paths = {start: [start]}
        frontier = [start]
        closed = None
        while frontier and closed is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w == start:
                        closed = paths[v] + [start]
                        break
                    if w in members and w not in paths:
                        paths[w] = paths[v] + [w]
                        nxt.append(w)
                if closed:
                    break
            frontier = nxt
        cycles.append(closed or sorted(comp))
    return cycles


def _in(module: str, unit: str) -> bool:
    return module == unit or module.startswith(unit + ".")


def _front_end(module: str) -> str | None:
    return next((f for f in FRONT_ENDS if _in(module, f)), None)


@pytest.fixture(scope="module")
def modules():
    found = discover()
    assert "glide.checkpoints" in found and "glide.train.loop" in found
    return found


@pytest.fixture(scope="module")
def graph(modules):
    return import_graph(modules)


def test_glide_never_imports_or_names_glidebench(modules):
    bad = []
    for module, (path, is_package) in modules.items():
        for target, _, line in imported_names(path, module, is_package):
            if target == "glidebench" or target.startswith("glidebench."):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {target}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if _GLIDEBENCH_PATH.fullmatch(node.value.strip()):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: names {node.value!r}")
    assert not bad, "glide must not depend on glidebench:\n" + "\n".join(bad)


def test_import_graph_has_no_cycle(graph):
    cycles = find_cycles(graph)
    lines = [
        " -> ".join(f"{a} (line {graph[a].get(b, '?')})" for a, b in zip(c, c[1:])) + f" -> {c[-1]}"
        for c in cycles
    ]
    groups = [", ".join(c) for c in strongly_connected(graph)]
    assert not cycles, (
        "import cycles in glide:\n" + "\n".join(lines) + "\nin the groups: " + "; ".join(groups)
    )


def test_front_ends_are_imported_only_from_above(graph):
    bad = []
    for module, targets in graph.items():
        for target, line in targets.items():
            unit = _front_end(target)
            if unit is None or _in(module, unit) or (module, target) in ALLOWED_FRONT_END_EDGES:
                continue
            bad.append(f"{module} (line {line}) imports the front end {target}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_leaf_modules_import_nothing_from_glide(graph, modules):
    for leaf in LEAVES:
        assert leaf in modules, f"{leaf} is missing"
        assert not graph[leaf], f"{leaf} must be a leaf but imports {sorted(graph[leaf])}"


# -- the checker itself, on small made-up packages ------------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, tuple[Path, bool]]:
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return discover(tmp_path / "g")


def test_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    mods = _package(
        tmp_path,
        {
            "g/__init__.py": "",
            "g/ck.py": "def load():\n    from .train.export import f\n",
            "g/train/__init__.py": "",
            "g/train/export.py": "from ..ck import load\n",
        },
    )
    cycles = find_cycles(import_graph(mods))
    assert cycles == [["g.ck", "g.train.export", "g.ck"]]


def test_checker_allows_a_package_init_importing_its_submodules(tmp_path):
    mods = _package(
        tmp_path,
        {
            "g/__init__.py": "",
            "g/clip/__init__.py": "from .model import M\nfrom . import config\n",
            "g/clip/config.py": "",
            "g/clip/model.py": "from .config import C\nimport g.clip.config\n",
            "g/ck.py": "from .clip.model import M\n",
        },
    )
    graph = import_graph(mods)
    assert graph["g.ck"] == {"g.clip.model": 1, "g.clip": 1}  # the package's __init__ runs too
    assert graph["g.clip.model"] == {"g.clip.config": 1}
    assert not find_cycles(graph)
    (tmp_path / "g/clip/__init__.py").write_text("from ..ck import x\n")  # a re-export that closes a circle
    assert find_cycles(import_graph(mods)) == [["g.ck", "g.clip", "g.ck"]]
