"""The study notebooks as files: where they are, their names and their ``parameters`` cells.

The notebooks live in the repository's ``notebooks/`` folder; each declares its parameters (name, annotation and
default) in the cell tagged ``parameters``. :func:`check_parameters` validates ``-p KEY VALUE`` overrides against
it, so a typo fails in one line; :mod:`alignclip.study.jobs` reads the defaults to list a notebook's evaluations
without running it.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from alignclip.errors import ConfigError, InputError

__all__ = [
    "NOTEBOOK_DIR",
    "REPO_ROOT",
    "check_parameters",
    "list_notebooks",
    "notebook_parameters",
    "notebook_path",
    "resolve_parameters",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def list_notebooks() -> list[str]:
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def notebook_path(name: str) -> Path:
    """``NAME`` may be the full stem (``03_main_table``), its number (``03``) or the part after it."""
    names = list_notebooks()
    for n in names:
        if name in (n, n.split("_", 1)[0], n.split("_", 1)[1]) or name == f"{n}.ipynb":
            return NOTEBOOK_DIR / f"{n}.ipynb"
    raise ConfigError(f"unknown notebook {name!r}; choose one of {', '.join(names)}")


def notebook_parameters(path: Path) -> dict[str, tuple[str | None, Any]]:
    """``{name: (annotation, default)}`` of the cell tagged ``parameters``."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"])
            out: dict[str, tuple[str | None, Any]] = {}
            for node in ast.parse(src).body:
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    out[node.target.id] = (ast.unparse(node.annotation), ast.literal_eval(node.value))
                elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    out[node.targets[0].id] = (None, ast.literal_eval(node.value))
            return out
    raise InputError(f"{path} has no cell tagged 'parameters'")


_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}


def _is(kind: str, value: Any) -> bool:
    if kind not in _TYPES:
        return True  # an annotation this check does not know is not checked
    if kind in ("int", "float") and isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if kind == "float" else isinstance(value, _TYPES[kind])


def _element_kind(annotation: str, default: Any) -> str | None:
    """The element type of a list parameter: ``list[X]`` in the annotation, else the type of the default's elements
    (None when the default is empty or mixed: not checked)."""
    inner = annotation.replace(" ", "").partition("[")[2].rstrip("]")
    if inner:
        return inner
    kinds = {type(v).__name__ for v in default} if isinstance(default, list) else set()
    return kinds.pop() if len(kinds) == 1 else None


def _coerce(name: str, text: Any, annotation: str | None, default: Any) -> Any:
    """Parse a ``-p KEY VALUE`` string as the parameter's type (Python literal syntax for lists/None) and check it (a
    Python value is checked as it is); a list's elements must have the type of the annotation's ``list[X]`` or of the
    default's elements (ints pass as floats)."""
    value = text
    if isinstance(text, str):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = text
    ann = annotation or type(default).__name__
    base = ann.replace(" ", "").split("|")
    allowed = [b.split("[")[0] for b in base]
    if value is None and "None" in allowed:
        return None
    if not any(_is(a, value) for a in allowed if a != "None"):
        if "str" in allowed and isinstance(text, str):
            return text
        raise ConfigError(f"parameter {name}={text!r} has the wrong type; expected {ann} (e.g. {default!r})")
    if isinstance(value, int) and not isinstance(value, bool) and "float" in allowed and "int" not in allowed:
        return float(value)
    if isinstance(value, list) and "list" in allowed:
        kind = _element_kind(next(b for b in base if b.startswith("list")), default)
        bad = [v for v in value if kind is not None and not _is(kind, v)]
        if bad:
            raise ConfigError(
                f"parameter {name}={text!r} has the wrong element type(s) ({', '.join(map(repr, bad[:3]))}); "
                f"expected a list of {kind} (e.g. {default!r})"
            )
        if kind == "float":
            value = [float(v) for v in value]
    return value


def check_parameters(path: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Validate names and types of ``params`` against the notebook's parameters cell."""
    declared = notebook_parameters(path)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for {path.stem}; valid: {', '.join(declared)}")
    return {k: _coerce(k, v, *declared[k]) for k, v in params.items()}


def resolve_parameters(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The notebook's parameter values: its defaults with ``params`` (checked) applied."""
    path = notebook_path(name)
    values = {k: default for k, (_, default) in notebook_parameters(path).items()}
    values.update(check_parameters(path, dict(params or {})))
    return values
