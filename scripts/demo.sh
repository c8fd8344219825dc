#!/usr/bin/env bash
# The README's first command: set up (uv if missing, locked environment) and run the whole RECAP loop on the
# embedded synthetic YAM data. Everything lands under ./demo_output (pass --out to change it).
set -euo pipefail
cd "$(dirname "$0")/.."
# uv if missing; `python3 -m uv` works even where pip's script directory is not on PATH.
if command -v uv >/dev/null 2>&1; then uv() { command uv "$@"; }; else
  python3 -m pip install -q uv
  uv() { python3 -m uv "$@"; }
fi
uv sync --frozen --quiet
uv run --frozen python scripts/demo.py "$@"
