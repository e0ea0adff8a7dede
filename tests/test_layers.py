"""The import contract: siamese_ad's layers import one way, and no modules import in a circle.

Every import counts: at the top of a module, inside a function, or under `if TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "siamese_ad"
SRC = Path(__file__).parents[1] / "src" / PACKAGE
ROOT = "__init__"  # the package itself: the public API (Config, train, Detector)

# Left to right: a module imports only from layers to its left, or from inside its own unit (a
# top-level module, or a subpackage such as data/). Units that share a layer are independent and
# do not import each other: training writes a model, evaluation only reads one.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("io", "device", "backbones"),  # file writes; where tensors run; the teacher registry
    ("config",),
    ("data",),
    ("models",),
    ("losses", "metrics"),
    ("checkpoint",),  # the run folder's format, below everything that reads it
    ("scoring", "thresholds"),
    ("training", "evaluation"),
    ("reporting",),
    ("app",),  # the workflows of the commands
    ("cli",),
    (ROOT,),
)
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


@dataclass(frozen=True)
class Import:
    """`source` imports `target` (both dotted module names) at `where` (file:line)."""

    source: str
    target: str
    where: str


def module_names(src: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package at `src`."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = (src.name, *path.relative_to(src).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The package's modules that an import node names, each once."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in known]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        anchor = parts if is_package else parts[:-1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    found = []
    for alias in node.names:
        child = f"{base}.{alias.name}"
        if child in known:
            found.append(child)
        elif base in known:
            found.append(base)
    return list(dict.fromkeys(found))


def read_imports(src: Path) -> list[Import]:
    """Every import of a package module by a package module, wherever it stands in the file."""
    modules = module_names(src)
    known = set(modules)
    out = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            for target in _targets(node, module, is_package, known):
                where = f"{path.relative_to(src.parent)}:{node.lineno}"
                out.append(Import(module, target, where))
    return out


def unit_of(module: str) -> str:
    """siamese_ad.data.mvtec -> data; siamese_ad -> ROOT."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def layer_violations(imports: list[Import]) -> list[str]:
    """One line per import from a layer to the right, or from a sibling unit of the same layer."""
    bad = []
    for imp in imports:
        source, target = unit_of(imp.source), unit_of(imp.target)
        if source not in LAYER_OF or target not in LAYER_OF:
            continue  # test_every_module_is_in_a_layer names it
        if source != target and LAYER_OF[target] >= LAYER_OF[source]:
            side = "beside" if LAYER_OF[target] == LAYER_OF[source] else "right of"
            why = f"{target} is {side} {source}"
            bad.append(f"{imp.where}: {imp.source} imports {imp.target} ({why})")
    return bad


def find_cycle(imports: list[Import]) -> list[Import] | None:
    """The imports of one circle of modules, or None when the graph has no circle."""
    graph: dict[str, list[Import]] = {}
    for imp in imports:
        graph.setdefault(imp.source, []).append(imp)
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[Import] = []

    def visit(module: str) -> list[Import] | None:
        state[module] = 1
        for imp in graph.get(module, []):
            if state.get(imp.target) == 1:
                start = next(i for i, p in enumerate(path) if p.source == imp.target) if path else 0
                return [*path[start:], imp]
            if imp.target not in state:
                path.append(imp)
                if (cycle := visit(imp.target)) is not None:
                    return cycle
                path.pop()
        state[module] = 2
        return None

    for module in list(graph):
        if module not in state and (cycle := visit(module)) is not None:
            return cycle
    return None


def test_every_module_is_in_a_layer() -> None:
    unplaced = sorted({unit_of(m) for m in module_names(SRC)} - set(LAYER_OF))
    assert not unplaced, f"units in no layer: {unplaced}; add each to LAYERS in {__file__}"


def test_no_module_imports_from_a_layer_to_its_right() -> None:
    bad = layer_violations(read_imports(SRC))
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_import_cycle() -> None:
    cycle = find_cycle(read_imports(SRC))
    assert cycle is None, "import cycle:\n" + "\n".join(
        f"{imp.where}: {imp.source} imports {imp.target}" for imp in cycle or []
    )


@pytest.fixture
def fake_package(tmp_path: Path) -> Path:
    """A package whose models import training in a function and whose two training modules
    import each other, one of them only under TYPE_CHECKING."""
    src = tmp_path / PACKAGE
    files = {
        "__init__.py": "",
        "models/__init__.py": "",
        "models/unet.py": "def f():\n    from siamese_ad.training.loop import run\n",
        "training/__init__.py": "",
        "training/loop.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .stage1 import Step\n",
        "training/stage1.py": "from siamese_ad.training import loop\n",
    }
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    return src


def test_the_checks_find_a_lazy_rightward_import_and_a_type_checking_cycle(
    fake_package: Path,
) -> None:
    imports = read_imports(fake_package)
    assert layer_violations(imports) == [
        f"{PACKAGE}/models/unet.py:2: {PACKAGE}.models.unet imports {PACKAGE}.training.loop "
        "(training is right of models)"
    ]
    cycle = find_cycle(imports)
    assert cycle is not None
    assert {(imp.source, imp.target) for imp in cycle} == {
        (f"{PACKAGE}.training.loop", f"{PACKAGE}.training.stage1"),
        (f"{PACKAGE}.training.stage1", f"{PACKAGE}.training.loop"),
    }
