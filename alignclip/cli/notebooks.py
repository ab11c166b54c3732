"""Run the study notebooks with papermill without touching the committed copies.

``alignclip notebook run NAME -p KEY VALUE ... --out DIR`` is the same as
``papermill notebooks/NAME.ipynb DIR/NAME.ipynb -p KEY VALUE ... --cwd .`` with the parameter names and types
checked against the notebook's ``parameters`` cell first, so a typo fails in one line instead of a traceback.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
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
    "run_all",
    "run_notebook",
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


def _coerce(name: str, text: Any, annotation: str | None, default: Any) -> Any:
    """Parse a ``-p KEY VALUE`` string as the parameter's type (Python literal syntax for lists/None)."""
    if not isinstance(text, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    ann = annotation or type(default).__name__
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list),
    }
    base = ann.replace(" ", "").split("|")
    allowed = [b.split("[")[0] for b in base]
    if value is None and "None" in allowed:
        return None
    if any(ok.get(a, True) for a in allowed if a != "None"):
        if "float" in allowed and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    if "str" in allowed:
        return str(value)
    raise ConfigError(f"parameter {name}={text!r} has the wrong type; expected {ann} (e.g. {default!r})")


def check_parameters(path: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Validate names and types of ``params`` against the notebook's parameters cell."""
    declared = notebook_parameters(path)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for {path.stem}; valid: {', '.join(declared)}")
    return {k: _coerce(k, v, *declared[k]) for k, v in params.items()}


def run_notebook(
    name: str,
    params: dict[str, Any] | None = None,
    out_dir: str | Path = "runs/notebooks",
    cwd: str | Path | None = None,
    kernel: str = "python3",
    progress: bool = False,
) -> Path:
    """Execute a copy of a study notebook with new parameters into ``out_dir`` (the original is never changed)."""
    import papermill as pm

    src = notebook_path(name)
    checked = check_parameters(src, dict(params or {}))
    out = Path(out_dir) / src.name
    if out.resolve() == src.resolve():
        raise InputError(f"--out {out_dir} would overwrite the committed notebook; choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(
        str(src),
        str(out),
        parameters=checked,
        cwd=str(cwd or REPO_ROOT),
        kernel_name=kernel,
        progress_bar=progress,
        log_output=False,
    )
    return out


def run_all(
    out_dir: str | Path,
    names: Sequence[str] | None = None,
    params: dict[str, Any] | None = None,
    cwd: str | Path | None = None,
) -> list[Path]:
    """Execute every notebook (the book's main job); parameters apply to the notebooks that declare them."""
    done = []
    for name in names or list_notebooks():
        declared = notebook_parameters(notebook_path(name))
        mine = {k: v for k, v in (params or {}).items() if k in declared}
        print(f"running {name} ...", flush=True)
        done.append(run_notebook(name, mine, out_dir, cwd=cwd))
    return done
