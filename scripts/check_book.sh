#!/usr/bin/env bash
# Check the built book in a real browser (headless Chromium from Debian's packages): console errors, missing images,
# broken internal links, stderr blocks, unrendered maths, paths of the build machine; screenshots for review.
# Run after `bash scripts/book.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null
fi
. .venv/bin/activate
python -c "import selenium" 2>/dev/null || pip install -q "selenium==4.40.0"
python scripts/check_book.py "$@"
