"""glidebench's modules import downwards only, in the layers below, and import lazily only what is heavy.

Every ``.py`` under ``glidebench/`` is parsed (nothing is imported); the graph is the one of
``tests/glide/test_layering.py`` (every import at any depth counts; importing a module also runs the packages
above it). The layers, lowest first; a module belongs to the longest unit that names it, and the package
``glidebench.suites`` itself (its ``__init__``: the suite files' registry) sits low while its modules (each
suite's entry point) sit at the top:

0. leaves: paths, keys, schema (column names), images_io;
1. records: store, spec, provenance, the suite registry;
2. measurement: metrics, clip_eval;
3. features (extractors and the feature cache);
4. data sources;
5. statfiles (other tools' file formats);
6. models, refstats (reference statistics);
7. generators, tracking, profile;
8. the report: it reads a run's files and never imports the runner;
9. the run wing (runner): options and plan, run directory, generation, features, metrics, outputs (it renders
   the report at the end of a run);
10. front ends: the suites' entry points, cli, __main__ and the package itself (they may call each other).

The rules:

1. An import goes to a lower layer, or stays inside its own unit (a module's siblings in ``glidebench.data``,
   say); so data sources and metrics never import the runner or the report, and the report never imports the
   runner.
2. The graph has no cycle.
3. An import inside a function is for a heavy or optional dependency only: a package in :data:`LAZY` (each
   with its reason), a module whose own module-level imports reach one, an import inside ``try`` that handles
   ImportError (an optional package), or the command line's commands (the CLI loads a command's modules when
   that command runs, so ``glidebench --help`` and ``ls`` start at once).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.glide.test_layering import discover, find_cycles, import_graph

ROOT = Path(__file__).resolve().parents[2]

LAYERS: tuple[tuple[str, ...], ...] = (
    ("glidebench.paths", "glidebench.keys", "glidebench.schema", "glidebench.images_io"),
    ("glidebench.store", "glidebench.spec", "glidebench.provenance", "glidebench.suites"),
    ("glidebench.metrics", "glidebench.clip_eval"),
    ("glidebench.features",),
    ("glidebench.data",),
    ("glidebench.statfiles",),
    ("glidebench.models", "glidebench.refstats"),
    ("glidebench.generators", "glidebench.tracking", "glidebench.profile"),
    ("glidebench.report",),
    ("glidebench.runner",),
    ("glidebench.suites.*", "glidebench.cli", "glidebench.__main__", "glidebench"),
)
TOP = len(LAYERS) - 1  # front ends may call each other (the CLI runs each command's entry point)

# Third-party packages imported inside functions, and why.
LAZY: dict[str, str] = {
    "matplotlib": "heavy (about 0.5 s and a font cache): the report's modules load it, and a run imports the "
    "report only when it renders one",
    "open_clip": "heavy (timm and its model registry): only an evaluator CLIP from OpenCLIP",
    "huggingface_hub": "comes with open_clip and diffusers: only to find their cached weights",
    "diffusers": "optional extra [diffusers]: only --generator diffusers:",
    "transformers": "optional extra [diffusers]: only --generator diffusers:",
    "torch.utils.tensorboard": "optional extra [tracking]: only --log-to tensorboard",
    "wandb": "optional, installed by the user: only --log-to wandb",
    "torch_fidelity": "heavy (its feature extractors' registry): only the torch-fidelity Inception and KID",
    "cleanfid": "heavy (builds a resizer on import): only --fid-resize clean",
    "scipy": "heavy (0.3 s): only the jackknife's t quantiles",
    "torch.profiler": "only --profile's trace",
    "threadpoolctl": "optional: numpy's BLAS threads per stage",
}
CLI_MODULES = ("glidebench.cli", "glidebench.__main__")


def _unit(module: str) -> tuple[int, str]:
    """(layer, unit) of ``module``: the longest unit naming it."""
    best: tuple[int, str] | None = None
    for rank, units in enumerate(LAYERS):
        for unit in units:
            if unit.endswith(".*"):
                parent = unit[:-2]
                hit = module.startswith(parent + ".")
                name = module.split(".")[: parent.count(".") + 2]
                unit = ".".join(name) if hit else unit
            elif unit == "glidebench":
                hit = module == unit  # the package's __init__ only
            else:
                hit = module == unit or module.startswith(unit + ".")
            if hit and (best is None or len(unit) > len(best[1])):
                best = (rank, unit)
    assert best is not None, f"{module} is in no layer of tests/glidebench/test_layering.py"
    return best


def _lazy_imports(path: Path, module: str, is_package: bool) -> list[tuple[str, int, bool]]:
    """(absolute target, line, inside a try that handles ImportError) of each import inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool, optional: bool) -> None:
        for child in ast.iter_child_nodes(node):
            fn = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            opt = optional
            if isinstance(node, ast.Try) and child in node.body:
                opt = optional or any(_catches_import_error(h) for h in node.handlers)
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(child, package):
                    found.append((target, child.lineno, opt))
            visit(child, fn, opt)

    visit(tree, False, False)
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def _targets(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - (node.level - 1)])
        return [f"{base}.{node.module}" if node.module else base]
    return [node.module or ""]


def _module_level_third_party(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module)
    return out


@pytest.fixture(scope="module")
def modules():
    found = discover(ROOT / "glidebench")
    assert "glidebench.runner.stages" in found and "glidebench.report" in found
    return found


@pytest.fixture(scope="module")
def graph(modules):
    return import_graph(modules)


def test_every_module_has_a_layer(modules):
    for module in modules:
        _unit(module)


def test_imports_go_down_the_layers(graph):
    bad = []
    for module, targets in sorted(graph.items()):
        rank, unit = _unit(module)
        for target, line in sorted(targets.items()):
            t_rank, t_unit = _unit(target)
            if t_rank > rank or (t_rank == rank and t_unit != unit and rank != TOP):
                bad.append(
                    f"{module}:{line} (layer {rank}, {unit}) imports {target} (layer {t_rank}, {t_unit})"
                )
    assert not bad, "imports that run back up (or sideways between units):\n" + "\n".join(bad)


def test_the_report_and_the_data_never_import_the_runner(graph):
    for module, targets in graph.items():
        if module.startswith(("glidebench.report", "glidebench.data", "glidebench.metrics")):
            up = [t for t in targets if t.startswith(("glidebench.runner", "glidebench.cli"))]
            assert not up, f"{module} imports {up}"
        if module.startswith(("glidebench.data", "glidebench.metrics")):
            assert not [t for t in targets if t.startswith("glidebench.report")], module


def test_import_graph_has_no_cycle(graph):
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_inside_functions_are_for_heavy_or_optional_packages(modules, graph):
    heavy_closure: dict[str, set[str]] = {}

    def heavy(module: str, seen: frozenset[str] = frozenset()) -> set[str]:
        """The LAZY packages that importing ``module`` loads (its module-level imports, transitively)."""
        if module in heavy_closure:
            return heavy_closure[module]
        if module in seen or module not in modules:
            return set()
        path, is_package = modules[module]
        found = {p for p in _module_level_third_party(path) if _lazy_key(p)}
        for target in graph[module]:
            found |= heavy(target, seen | {module})
        heavy_closure[module] = found
        return found

    bad = []
    for module, (path, is_package) in sorted(modules.items()):
        if module in CLI_MODULES:
            continue
        for target, line, optional in _lazy_imports(path, module, is_package):
            if optional or _lazy_key(target):
                continue
            if target.startswith("glidebench") and heavy(target):
                continue
            bad.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    assert not bad, (
        "imports inside functions of modules that are neither heavy nor optional (import them at module level, "
        "or add the package to LAZY with its reason):\n" + "\n".join(bad)
    )


def _lazy_key(name: str) -> str | None:
    return next((k for k in LAZY if name == k or name.startswith(k + ".")), None)
