"""Every study notebook follows one skeleton (the Project Pythia cookbook layout of the house style):

title ``# NN · Title`` → ``## Overview`` → ``## Prerequisites`` → the cell tagged ``parameters`` → the one import
cell (``from alignclip.study import ...`` only) → the banner → numbered sections ``## 1. ...``, ``## 2. ...`` →
``## Summary`` → ``## References``; and every parameter is read by the notebook's code (no parameter kept only
to fill a signature).
"""

from __future__ import annotations

import ast
import re

import nbformat
import pytest

from alignclip.study.notebooks import list_notebooks, notebook_path

NAMES = list_notebooks()
SKELETON = ("Overview", "Prerequisites", "Summary", "References")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
NUMBERED = re.compile(r"^(\d+)\.\s+\S")


def _read(name: str):
    return nbformat.read(notebook_path(name), as_version=4)


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _headings(nb) -> list[tuple[int, int, str]]:
    """``(cell index, level, text)`` of every Markdown heading, in order (fenced code skipped)."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        fenced = False
        for line in cell.source.splitlines():
            if line.lstrip().startswith("```"):
                fenced = not fenced
            m = None if fenced else HEADING.match(line)
            if m:
                out.append((i, len(m.group(1)), m.group(2)))
    return out


def _alignclip_imports(tree: ast.AST) -> list[str]:
    """Modules of every ``alignclip`` import in ``tree`` (``from X import`` gives X; ``import X`` gives X)."""
    mods = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "alignclip":
            mods.append(node.module)
        elif isinstance(node, ast.Import):
            mods += [a.name for a in node.names if a.name.split(".")[0] == "alignclip"]
    return mods


def _code_cells(nb) -> list[tuple[int, ast.AST]]:
    return [(i, ast.parse(c.source)) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _parameters_cell(nb) -> int:
    idx = [i for i, c in enumerate(nb.cells) if "parameters" in _tags(c)]
    assert len(idx) == 1, f"expected exactly one cell tagged 'parameters', found {len(idx)} (cells {idx})"
    assert nb.cells[idx[0]].cell_type == "code", "the cell tagged 'parameters' must be a code cell"
    return idx[0]


def test_every_notebook_is_checked():
    assert len(NAMES) == 14 and NAMES[-1] == "13_backbones", NAMES


@pytest.mark.parametrize("name", NAMES)
def test_title_cell_first(name):
    nb = _read(name)
    first = nb.cells[0]
    number = name.split("_", 1)[0]
    assert first.cell_type == "markdown", f"{name}: the first cell must be the Markdown title"
    title = first.source.splitlines()[0]
    assert re.match(rf"^# {number} · \S", title), (
        f"{name}: the first line must read '# {number} · Title', got {title!r}"
    )
    levels = [(i, text) for i, level, text in _headings(nb) if level == 1]
    assert levels == [(0, title[2:].strip())], f"{name}: only the title may be a level-1 heading, got {levels}"


@pytest.mark.parametrize("name", NAMES)
def test_skeleton_headings_in_order(name):
    nb = _read(name)
    level2 = [(i, text) for i, level, text in _headings(nb) if level == 2]
    texts = [t for _, t in level2]
    for heading in SKELETON:
        assert texts.count(heading) == 1, f"{name}: expected one '## {heading}' heading, found {texts.count(heading)}"
    where = {t: k for k, t in enumerate(texts)}
    assert [where[h] for h in SKELETON] == sorted(where[h] for h in SKELETON), (
        f"{name}: headings must come in the order {', '.join(SKELETON)}; got {texts}"
    )
    assert texts[:2] == ["Overview", "Prerequisites"], f"{name}: Overview and Prerequisites come first, got {texts}"
    assert texts[-2:] == ["Summary", "References"], f"{name}: Summary and References come last, got {texts}"
    sections = texts[2:-2]
    assert sections, f"{name}: no numbered section between Prerequisites and Summary"
    numbers = []
    for text in sections:
        m = NUMBERED.match(text)
        assert m, f"{name}: section heading {text!r} must be numbered ('## 1. ...')"
        numbers.append(int(m.group(1)))
    assert numbers == list(range(1, len(numbers) + 1)), f"{name}: sections must be numbered 1..n, got {numbers}"


@pytest.mark.parametrize("name", NAMES)
def test_parameters_imports_banner_order(name):
    nb = _read(name)
    params = _parameters_cell(nb)
    level2 = {text: i for i, level, text in _headings(nb) if level == 2}
    first_section = min((i for text, i in level2.items() if NUMBERED.match(text)), default=len(nb.cells))
    assert level2.get("Prerequisites", len(nb.cells)) < params < first_section, (
        f"{name}: the parameters cell must sit between Prerequisites and the first numbered section"
    )
    importing = [i for i, tree in _code_cells(nb) if _alignclip_imports(tree)]
    assert importing == [params + 1], (
        f"{name}: exactly one code cell, right after the parameters cell, imports alignclip (found cells {importing})"
    )
    mods = _alignclip_imports(ast.parse(nb.cells[params + 1].source))
    assert set(mods) == {"alignclip.study"}, f"{name}: notebooks import only `from alignclip.study import`, got {mods}"
    if "start_study" in nb.cells[params + 1].source:  # notebook 00 reads the paper only: no study, no banner
        banner = nb.cells[params + 2]
        assert banner.cell_type == "code" and "start_study(" in banner.source and "banner(ctx)" in banner.source, (
            f"{name}: the cell after the imports must start the study and show banner(ctx)"
        )
        assert params + 2 < first_section


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_is_used(name):
    """A parameter only passed along to a signature where it has no effect should not exist: every name assigned in
    the parameters cell must be read by another code cell (the notebook decides what it passes to start_study)."""
    nb = _read(name)
    params = _parameters_cell(nb)
    declared = []
    for node in ast.parse(nb.cells[params].source).body:
        assert isinstance(node, (ast.AnnAssign, ast.Assign)), (
            f"{name}: the parameters cell holds assignments only, got {ast.unparse(node)!r}"
        )
        target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
        assert isinstance(target, ast.Name)
        declared.append(target.id)
    read = {
        n.id
        for i, tree in _code_cells(nb)
        if i != params
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }
    unused = [p for p in declared if p not in read]
    assert not unused, f"{name}: parameters never read by the notebook: {', '.join(unused)}"


#: Study calls that evaluate runs and give each mIoU a bootstrap interval with ``ctx.n_boot`` resamples.
BOOTSTRAPPING = {"evaluate_runs", "evaluate_sweep", "run_sweep", "evaluate_crf_runs"}


@pytest.mark.parametrize("name", NAMES)
def test_no_parameter_only_fills_start_study(name):
    """Parameters ``start_study`` validates but a notebook may not read: ``n_boot`` needs a bootstrap
    (``ctx.n_boot`` or an evaluation), ``datasets``/``data_root``/``limit`` need ``"data"`` among its ``needs``
    (the default has it), ``upsampler_ckpt`` needs ``"weights"``."""
    nb = _read(name)
    declared = set()
    for node in ast.parse(nb.cells[_parameters_cell(nb)].source).body:
        declared.add((node.target if isinstance(node, ast.AnnAssign) else node.targets[0]).id)
    trees = [tree for _, tree in _code_cells(nb)]
    nodes = [n for tree in trees for n in ast.walk(tree)]
    calls = {n.func.id: n for n in nodes if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    if "start_study" not in calls:
        return
    needs = next((ast.unparse(k.value) for k in calls["start_study"].keywords if k.arg == "needs"), None)
    reads_n_boot = any(isinstance(n, ast.Attribute) and n.attr == "n_boot" for n in nodes) or BOOTSTRAPPING & set(calls)
    if "n_boot" in declared:
        assert reads_n_boot, f"{name}: n_boot is declared but nothing bootstraps; remove the parameter"
    if needs is not None and "'data'" not in needs:
        extra = sorted(declared & {"datasets", "data_root", "limit"})
        assert not extra, f"{name}: reads no dataset (needs={needs}) but declares {', '.join(extra)}"
    if needs is not None and "'weights'" not in needs:
        assert "upsampler_ckpt" not in declared, f"{name}: needs={needs} reads no checkpoint; remove upsampler_ckpt"
