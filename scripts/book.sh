#!/usr/bin/env bash
# Set up, execute every notebook (smoke profile by default) with papermill, and build the HTML book offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0
alignclip notebook run-all --out book/executed
jupyter-book build -W -n --keep-going .
echo "book: $(pwd)/_build/html/index.html"
