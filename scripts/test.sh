#!/usr/bin/env bash
# Set up and run every test: unit tests, lint, then the smoke-profile notebooks under nbval.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONHASHSEED=0
ruff check alignclip tests
python -m pytest -q -p no:cacheprovider "$@"
