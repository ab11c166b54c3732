"""Run the study notebooks with papermill without touching the committed copies.

``alignclip notebook run NAME -p KEY VALUE ... --out DIR`` is the same as
``papermill notebooks/NAME.ipynb DIR/NAME.ipynb -p KEY VALUE ... --cwd .`` with the parameter names and types
(list elements included) checked against the notebook's ``parameters`` cell first, so a typo fails in one line
instead of a traceback. It runs from any folder: the notebooks are found in the package checkout, and the kernel
runs in the current working directory (a relative ``output_dir`` or ``data_root`` resolves there, as ``--out`` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignclip.errors import ConfigError, InputError
from alignclip.study.notebooks import check_parameters, list_notebooks, notebook_parameters, notebook_path

__all__ = ["run_all", "run_notebook"]


def run_notebook(
    name: str,
    params: dict[str, Any] | None = None,
    out_dir: str | Path = "runs/notebooks",
    cwd: str | Path | None = None,
    kernel: str = "python3",
    progress: bool = False,
) -> Path:
    """Execute a copy of a study notebook with new parameters into ``out_dir`` (the original is never changed).

    Args:
        name: the notebook (:func:`notebook_path`).
        params: parameters, checked against the notebook's parameters cell (:func:`check_parameters`).
        out_dir: folder of the executed copy (relative to the current working directory).
        cwd: working directory of the kernel (default: the current one; relative ``output_dir`` resolves there).
        kernel: Jupyter kernel name.
        progress: show papermill's progress bar.
    """
    src = notebook_path(name)
    checked = check_parameters(src, dict(params or {}))
    out = Path(out_dir).absolute() / src.name
    if out.resolve() == src.resolve():
        raise InputError(f"--out {out_dir} would overwrite the committed notebook; choose another folder")
    work = Path(cwd).absolute() if cwd is not None else Path.cwd()
    if not work.is_dir():
        raise InputError(f"working directory {work} is not a folder; pass an existing folder as cwd")
    try:
        import papermill as pm
    except ImportError:
        raise InputError("running notebooks needs papermill: pip install 'alignclip[study]'") from None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"--out {out_dir}: cannot create folder {out.parent}: {err.strerror or err}") from None
    pm.execute_notebook(
        str(src),
        str(out),
        parameters=checked,
        cwd=str(work),
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
    """Execute every notebook (the book's main job); parameters apply to the notebooks that declare them.

    Every parameter is checked against every notebook before the first one runs: a name no notebook declares, or a
    value of the wrong type for any of them, is a one-line :class:`ConfigError`.
    """
    names = list(names or list_notebooks())
    params = dict(params or {})
    per_notebook = {}
    for name in names:
        path = notebook_path(name)
        declared = notebook_parameters(path)
        per_notebook[name] = check_parameters(path, {k: v for k, v in params.items() if k in declared})
    unused = sorted(set(params) - {k for mine in per_notebook.values() for k in mine})
    if unused:
        raise ConfigError(f"parameter(s) {', '.join(unused)} declared by none of the notebooks {', '.join(names)}")
    done = []
    for name in names:
        print(f"running {name} ...", flush=True)
        done.append(run_notebook(name, per_notebook[name], out_dir, cwd=cwd))
    return done
