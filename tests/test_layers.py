"""The package's layers: every module imports only from layers below its own (and its own subpackage), with no
import cycle anywhere, counting imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "alignclip"

#: Lowest first. A module may import from a lower layer or from its own subpackage, never from a higher layer.
LAYERS: list[tuple[str, ...]] = [
    ("alignclip.errors", "alignclip.kinds", "alignclip.version"),  # base: no alignclip imports at all
    ("alignclip.ops",),  # pure tensor maths
    ("alignclip.io",),  # files, images, overlays, provenance
    ("alignclip.models",),  # CLIP, text, upsamplers, VFMs
    ("alignclip.data",),  # manifests, readers, converters, fake data
    ("alignclip.methods",),  # the methods of the paper's tables
    ("alignclip.pipeline",),  # configuration, runtime, the segmentor
    ("alignclip.evaluation",),  # evaluation, metrics, bootstrap, benchmark
    ("alignclip.paper",),  # the paper's tables, name maps, audit
    ("alignclip.study",),  # what the notebooks call
    ("alignclip.cli",),  # the command line
    ("alignclip",),  # the root package: a lazy facade over the layers
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
    """The layer unit a module belongs to: a top-level module, or the top-level subpackage holding it."""
    for layer in LAYERS:
        for unit in sorted(layer, key=len, reverse=True):
            if module == unit or module.startswith(unit + "."):
                return unit
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")


RANK = {unit: rank for rank, layer in enumerate(LAYERS) for unit in layer}


def imports_of(module: str) -> list[tuple[str, int]]:
    """``(imported alignclip module, line)`` for every import in the module, at any depth (functions included).

    ``from alignclip.x import y`` counts as an import of ``alignclip.x.y`` when that is a module, else of
    ``alignclip.x``.
    """
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "alignclip"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "alignclip":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((sub if sub in MODULES else target, node.lineno))
    return out


def test_every_module_has_a_layer():
    assert {unit_of(m) for m in MODULES} <= set(RANK)


def test_imports_only_flow_downward():
    bad = []
    for module in MODULES:
        unit = unit_of(module)
        for target, line in imports_of(module):
            if target not in MODULES:
                bad.append(f"{module}:{line} imports {target}, which does not exist")
                continue
            other = unit_of(target)
            if other != unit and RANK[other] >= RANK[unit]:
                bad.append(f"{module}:{line} imports {target} (layer {RANK[other]} >= its own {RANK[unit]})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_relative_imports():
    rel = [
        f"{m}:{n.lineno}"
        for m, p in MODULES.items()
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.ImportFrom) and n.level
    ]
    assert not rel, f"relative imports (use absolute `from alignclip.x import y`): {rel}"


def test_no_import_cycle():
    graph = {m: sorted({t for t, _ in imports_of(m) if t in MODULES and t != m}) for m in MODULES}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_base_modules_import_nothing_of_the_package():
    for module in LAYERS[0]:
        assert imports_of(module) == [], f"{module} must not import alignclip modules"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "alignclip"))
def test_no_private_name_imported_across_modules(module):
    """``from alignclip.x import _name`` from another module is refused: what is shared is public."""
    path = MODULES[module]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alignclip"):
            private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
            assert not private, f"{module}:{node.lineno} imports private {private} from {node.module}"


def test_no_mock_in_library_code():
    users = [m for m, p in MODULES.items() if "unittest" in p.read_text() and "mock" in p.read_text()]
    assert not users, f"library modules using unittest.mock (add a public hook instead): {users}"


def test_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The check itself: an ops module importing the pipeline is reported (negative control)."""
    fake = tmp_path / "upward.py"
    fake.write_text("def f():\n    from alignclip.pipeline.segmentor import Segmentor\n    return Segmentor\n")
    monkeypatch.setitem(MODULES, "alignclip.ops.upward", fake)
    with pytest.raises(AssertionError, match="alignclip.ops.upward:2 imports alignclip.pipeline.segmentor"):
        test_imports_only_flow_downward()
