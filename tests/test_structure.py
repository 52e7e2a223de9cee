"""The shape of ``src/loupe``, read from the source (``ast``; nothing is imported): no import
cycle, no module importing a higher layer, no file over 500 lines, no function over 60.

``LAYERS`` is the one place the layer order is written, lowest first. An entry names a module
or a package with everything in it; a module belongs to the longest entry that names it (the
top package ``loupe`` itself names only its ``__init__``). A module may import its own layer
and the layers below, never one above; within a layer the cycle check keeps the order.
Imports inside functions count (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "loupe"
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60

LAYERS: tuple[tuple[str, ...], ...] = (
    # foundation: files, devices and processes, autograd and module helpers
    ("loupe._autograd", "loupe._frozen", "loupe.io", "loupe.layers", "loupe.distributed"),
    # what a map method works with
    ("loupe.hooks", "loupe.targets", "loupe.registry", "loupe.method_specs", "loupe._frozen_layer",
     "loupe._frozen_grad", "loupe._affine_head", "loupe.context"),
    # maps to masks (normalisation, threshold rule, CRF, palette)
    ("loupe.masks",),
    # the one call
    ("loupe.api",),
    # the methods (shuffle saliency calls explain for its base methods)
    ("loupe.methods",),
    # the package's face: imports the methods, so the registry is full after `import loupe`
    ("loupe",),
    # scores of maps, masks, boxes and classifiers
    ("loupe.metrics",),
    # data sets and what a command names
    ("loupe.data",),
    # networks, weights, preprocessing, model files, the one loader
    ("loupe.models",),
    # tables, plots, overlays, HTML
    ("loupe.reports",),
    # map files of a data set, pseudo-masks
    ("loupe.mapsets",),
    # loupe explain: images, targets of each kind of model, files and their record
    ("loupe.explaining",),
    # loupe evaluate
    ("loupe.evaluation",),
    # loupe faithfulness: the metrics of several methods on a data set or image files, the table
    ("loupe.faithfulness",),
    # loupe compare: maps, references and evaluation of several methods, the ranked table
    ("loupe.comparison",),
    # the one training loop and its tasks
    ("loupe.training",),
    # everything on the synthetic set
    ("loupe.demo",),
    # the command line
    ("loupe.cli", "loupe.__main__"),
)


# --------------------------------------------------------------------------- the checker


def find_modules(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``src/package`` (a package is its
    ``__init__.py``)."""
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` (at ``path``) imports, anywhere in it.
    ``from a import b`` is ``a.b`` when that is a module, else ``a``; ``import a.b`` is the
    longest known prefix of ``a.b``. Relative imports are resolved."""
    known = set(known)
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [_longest_known(alias.name, known) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, name, is_package)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known
                       else _longest_known(base, known) for a in node.names]
        else:
            continue
        found.update(t for t in targets if t is not None and t != name)
    return found


def _absolute(module: str | None, level: int, importer: str, is_package: bool) -> str:
    if level == 0:
        return module or ""
    parts = importer.split(".")
    if not is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([module] if module else []))


def _longest_known(dotted: str, known: set[str]) -> str | None:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = find_modules(src, package)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, sorted order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def layer_of(module: str, layers: Sequence[Sequence[str]], package: str) -> int | None:
    """The index of the layer whose longest entry names ``module`` (None: in no layer)."""
    best, best_length = None, -1
    for index, entries in enumerate(layers):
        for entry in entries:
            names = module == entry or (entry != package and module.startswith(entry + "."))
            if names and len(entry) > best_length:
                best, best_length = index, len(entry)
    return best


def layer_violations(graph: Mapping[str, set[str]], layers: Sequence[Sequence[str]],
                     package: str) -> list[str]:
    """Modules in no layer, layer entries that name no module, and imports of a higher
    layer, one line each."""
    problems = [f"{m} is in no layer of LAYERS" for m in sorted(graph)
                if layer_of(m, layers, package) is None]
    problems += [f"LAYERS names {e}, which is no module" for entries in layers for e in entries
                 if not any(m == e or m.startswith(e + ".") for m in graph)]
    for module in sorted(graph):
        own = layer_of(module, layers, package)
        for target in sorted(graph[module]):
            theirs = layer_of(target, layers, package)
            if own is not None and theirs is not None and theirs > own:
                problems.append(f"{module} (layer {own}) imports {target} (layer {theirs})")
    return problems


def long_files(src: Path, package: str, limit: int) -> list[str]:
    return [f"{path.relative_to(src)}: {n} lines" for path in find_modules(src, package).values()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > limit]


def long_functions(src: Path, package: str, limit: int) -> list[str]:
    found = []
    for path in find_modules(src, package).values():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(src)}:{node.lineno} {node.name}: "
                                 f"{length} lines")
    return found


# --------------------------------------------------------------------------- loupe itself


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(SRC, PACKAGE)


def test_the_graph_sees_the_imports(graph):
    assert "loupe.api" in graph["loupe"] and "loupe.methods" in graph["loupe"]
    assert "loupe.context" in graph["loupe.methods.cam"]
    assert "loupe.distributed" in graph["loupe.mapsets.generate"]  # from loupe import distributed


def test_no_import_cycle(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_imports_a_higher_layer(graph):
    problems = layer_violations(graph, LAYERS, PACKAGE)
    assert not problems, "\n".join(problems)


def test_the_registry_imports_no_method(graph):
    assert not any(m.startswith("loupe.methods") for m in graph["loupe.registry"])


def test_no_subcommand_imports_another(graph):
    from loupe.cli import SUBCOMMANDS  # shared modules (args, values, catalog) are not commands

    commands = {f"loupe.cli.{module}" for module in SUBCOMMANDS.values()}
    assert commands <= set(graph)
    problems = [f"{m} imports {t}" for m in sorted(commands) for t in graph[m] if t in commands]
    assert not problems, "\n".join(problems)


def test_no_file_over_500_lines():
    problems = long_files(SRC, PACKAGE, MAX_FILE_LINES)
    assert not problems, "\n".join(problems)


def test_no_function_over_60_lines():
    problems = long_functions(SRC, PACKAGE, MAX_FUNCTION_LINES)
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- the checker can fail


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_reports_a_cycle_through_a_lazy_and_a_relative_import(tmp_path):
    src = write_tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import f\n",
        "pkg/b.py": "def f():\n    from .c import g\n",
        "pkg/c.py": "import pkg.a\n",
        "pkg/d.py": "from pkg import a\n",
    })
    graph = import_graph(src, "pkg")
    assert graph["pkg.d"] == {"pkg.a"} and graph["pkg.b"] == {"pkg.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (src / "pkg/c.py").write_text("import pkg\n")
    assert find_cycle(import_graph(src, "pkg")) is None


def test_checker_reports_upward_imports_and_modules_in_no_layer(tmp_path):
    src = write_tree(tmp_path, {
        "pkg/__init__.py": "from pkg.low import x\n",
        "pkg/low.py": "from pkg.high.part import y\n",
        "pkg/high/__init__.py": "",
        "pkg/high/part.py": "from pkg import low\n",
        "pkg/stray.py": "",
    })
    layers = (("pkg.low", "pkg.gone"), ("pkg",), ("pkg.high",))
    problems = layer_violations(import_graph(src, "pkg"), layers, "pkg")
    assert problems == [
        "pkg.stray is in no layer of LAYERS",
        "LAYERS names pkg.gone, which is no module",
        "pkg.low (layer 0) imports pkg.high.part (layer 2)",
    ]
    assert layer_of("pkg.high.part", layers, "pkg") == 2 and layer_of("pkg", layers, "pkg") == 1


def test_checker_reports_long_files_and_functions(tmp_path):
    def body(lines: int, indent: str) -> str:
        return "".join(f"{indent}x = {i}\n" for i in range(lines))

    src = write_tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/long.py": "\n" * 501,
        "pkg/short.py": "\n" * 500,
        # ok: 60 lines with its def; too_long (a method, at line 62): 61
        "pkg/funcs.py": f"def ok():\n{body(59, '    ')}class C:\n"
                        f"    def too_long(self):\n{body(60, '        ')}",
    })
    assert long_files(src, "pkg", 500) == [f"{Path('pkg/long.py')}: 501 lines"]
    assert long_functions(src, "pkg", 60) == [f"{Path('pkg/funcs.py')}:62 too_long: 61 lines"]
