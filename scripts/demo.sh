#!/usr/bin/env bash
# The README's first command: set up (uv if missing, locked environment) and run the whole RECAP loop on the
# embedded synthetic YAM data. Everything lands under ./demo_output (pass --out to change it).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv
export PATH="$HOME/.local/bin:$PATH"
uv sync --frozen --quiet
exec uv run --frozen python scripts/demo.py "$@"
