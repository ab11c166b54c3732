#!/usr/bin/env bash
# Create (or reuse) .venv and install the project with everything the book and the tests need.
# torch is pinned to the build this project is tested with; on a machine with a GPU the same wheel runs CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -c "import torch, torchvision" 2>/dev/null || pip install -q torch==2.14.1 torchvision==0.29.1
pip install -q -e '.[all]'
