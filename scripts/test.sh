#!/usr/bin/env bash
# Set up and run every test: lint, unit tests, then every study notebook (smoke profile) under nbval.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0
python -m ipykernel install --user --name python3 >/dev/null 2>&1 || true
ruff check alignclip tests notebooks
ruff format --check alignclip tests notebooks
python -m pytest -q -p no:cacheprovider tests "$@"
# notebook regression: executes each notebook (smoke profile) and compares the cells marked # NBVAL_CHECK_OUTPUT
python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
  --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks/
