"""RECAP's sensitivity to `top_percent` and indicator dropout, one command (see `openpi.sim.sweep`).

    uv run benchmarks/recap_sweep_bench.py --tasks press_red   # the committed sweep (~27 min on 2 cores)
    uv run benchmarks/recap_sweep_bench.py --budget toy        # the same pipeline at toy size

Writes `<out>/results.json` and `<out>/table.txt`; a full-budget run also writes
`benchmarks/results/recap_sweep_bench[_<tasks>].json` (with the machine).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from typing import Literal

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Args:
    budget: Literal["full", "toy"] = "full"
    """full: the experiment's budget for one iteration; toy: the plumbing at toy size."""
    out: pathlib.Path = pathlib.Path("./sim_output/recap_sweep_bench")
    """Everything the run writes (replaced on every run)."""
    tasks: tuple[str, ...] | None = None
    """A subset of the tabletop tasks (`--tasks press_red`: the one the toy policy learns); default: all three."""
    top_percents: tuple[float, ...] = (10.0, 30.0, 50.0)
    dropouts: tuple[float, ...] = (0.1, 0.3)
    seed: int = 0
    """Training/collection seed (the sweep evaluates on the validation seed range, disjoint from it)."""
    save_results: bool = True
    """Copy the results of a full-budget run into benchmarks/results/ (toy runs are never saved there)."""


def main(args: Args) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from openpi.sim import experiment
    from openpi.sim import sweep

    sweep.check_grid(args.top_percents, args.dropouts)  # before the output directory is emptied
    config = experiment.fresh_config("tabletop", args.out, args.budget, args.seed, args.tasks)
    results = sweep.run(sweep.SweepConfig(config, top_percents=args.top_percents, dropouts=args.dropouts))
    print(sweep.table(results))
    print(json.dumps({"labels": results["labels"], "value": results["value"], "total_s": results["total_s"]}, indent=2))
    if args.save_results and args.budget == "full":
        import run_all

        results["machine"] = run_all.machine_description()
        name = "recap_sweep_bench" + "".join(f"_{task}" for task in args.tasks or ())
        (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"Wrote {RESULTS / f'{name}.json'}")
    return results


if __name__ == "__main__":
    from openpi.shared import cli

    # Bad input (an unknown flag, a missing run, a grid without the default) is one sentence and exit status 2.
    cli.run(lambda args: main(cli.parse(Args, args, description=__doc__)), name="recap_sweep_bench")
