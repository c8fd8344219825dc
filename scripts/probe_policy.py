"""Probe a policy checkpoint on a dataset (sim or robot): how much the action chunk moves when one input changes.

    uv run scripts/probe_policy.py sim_pi06 --checkpoint-dir checkpoints/sim_pi06/it1/1499 \\
        --data-dir sim_output/data/it0 --num-frames 64 --output probe.json

Rows: the sampling noise redrawn, each image swapped with another episode's or blacked out, another task's prompt,
the state perturbed, and (pi0.6) the indicator flipped, all with the sampling noise held fixed except the noise row;
on tabletop sim data also the first-target error against the prompted button. Prints a table and writes JSON.
The body is `openpi.sim.probe.main`.
"""

from collections.abc import Sequence
import sys

from openpi.shared import cli
from openpi.sim import probe


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(probe.main, sys.argv[1:] if argv is None else argv, name="openpi.probe_policy")


if __name__ == "__main__":
    main()
