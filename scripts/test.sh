#!/usr/bin/env bash
# The README's second command: set up (uv if missing, locked environment), check the import layers, run the test suite.
# Tests marked `slow` or `manual` are excluded; run them with `uv run pytest -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
# uv if missing; `python3 -m uv` works even where pip's script directory is not on PATH.
if command -v uv >/dev/null 2>&1; then uv() { command uv "$@"; }; else
  python3 -m pip install -q uv
  uv() { python3 -m uv "$@"; }
fi
# The 'sim' extra (MetaWorld) is part of the tested setup: its tests run in CI.
uv sync --frozen --extra sim --quiet
# The layers (CONTRIBUTING.md): an upward import or an import loop between files fails here, before any test runs.
uv run --frozen lint-imports --no-cache --no-logo
set +e
uv run --frozen pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
# pytest exits 5 when it collected nothing: that is a failure of the suite, not a pass.
exit $rc
