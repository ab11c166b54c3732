#!/usr/bin/env bash
# Regenerate the reference outputs stored in the committed notebooks (smoke profile), which the nbval regression
# test in scripts/test.sh compares against. Run it only when a change is meant to alter those outputs, and review
# the diff of the cells marked # NBVAL_CHECK_OUTPUT before committing.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0
for nb in notebooks/[0-9][0-9]_*.ipynb; do
  echo "refreshing $nb"
  papermill "$nb" "$nb" --cwd notebooks --log-level WARNING
done
