#!/usr/bin/env bash
# Set up, execute every notebook (smoke profile by default) with papermill, and build the HTML book offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0
alignclip notebook run-all --out book/executed
# MathJax from the installed package into the book's own static files: the maths renders offline
python - <<'PY'
import importlib.util, pathlib, shutil
src = pathlib.Path(importlib.util.find_spec("mathjax").origin).parent / "static" / "mathjax" / "es5"
dst = pathlib.Path("_mathjax/mathjax")  # html_extra_path: copied as is, not added to every page
shutil.rmtree(dst, ignore_errors=True)
dst.mkdir(parents=True)
shutil.copy2(src / "tex-mml-chtml.js", dst)  # the combined component; it loads fonts, extensions and menu lazily
for sub in ("input", "output", "ui", "a11y"):
    shutil.copytree(src / sub, dst / sub, ignore=shutil.ignore_patterns("sre", "*.map", "svg"))
PY
jupyter-book build -W -n --keep-going .
echo "book: $(pwd)/_build/html/index.html"
