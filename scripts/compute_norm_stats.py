"""Compute `norm_stats.json` for a training config, a value config or a LeRobot dataset (`--help` for the usage).

    uv run scripts/compute_norm_stats.py <config name or dataset root> [--flags]

The body is `openpi.training.norm_stats.main`.
"""

import logging
import sys

from openpi.shared import cli
from openpi.training import norm_stats


def main(argv: list[str] | None = None) -> None:
    cli.run(norm_stats.main, sys.argv[1:] if argv is None else argv, name="compute_norm_stats", level=logging.INFO)


if __name__ == "__main__":
    main()
