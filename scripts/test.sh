#!/usr/bin/env bash
# The README's second command: set up (uv if missing, locked environment) and run the test suite.
# Tests marked `slow` or `manual` are excluded; run them with `uv run pytest -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv
export PATH="$HOME/.local/bin:$PATH"
uv sync --frozen --quiet
set +e
uv run --frozen pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
# pytest exits 5 when it collected nothing: that is a failure of the suite, not a pass.
exit $rc
