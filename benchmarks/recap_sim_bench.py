"""The RECAP-vs-BC experiment in simulation, one command (see `openpi.sim.experiment` for what it does).

    uv run benchmarks/recap_sim_bench.py                    # the full budget on the embedded tabletop task (press_red)
    uv run benchmarks/recap_sim_bench.py --budget toy       # the same pipeline at toy size (minutes)
    uv run benchmarks/recap_sim_bench.py --env metaworld    # MetaWorld v3 from state (uv sync --extra sim)
    uv run benchmarks/recap_sim_bench.py --tasks press_red press_green press_blue   # three prompts (fails the gate)
    uv run benchmarks/recap_sim_bench.py --train-seeds 0 1 2   # every arm trained once per seed on the same data

Writes `<out>/results.json`, `<out>/table.txt`, `<out>/success_vs_iteration.png` and every dataset, checkpoint and
relabelling report on the way; the full run also copies the results to `benchmarks/results/recap_sim_bench.json`
(with the machine), the PNG and the table beside it.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import sys
from typing import Literal

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Args:
    budget: Literal["full", "toy"] = "full"
    """full: the published experiment (<= 60 min on 2 CPU cores); toy: the plumbing at toy size."""
    env: Literal["tabletop", "metaworld"] = "tabletop"
    out: pathlib.Path = pathlib.Path("./sim_output/recap_sim_bench")
    """Everything the run writes (replaced on every run)."""
    tasks: tuple[str, ...] | None = None
    """The env's tasks to run; default: the experiment's set (tabletop: press_red, the one task the toy policy
    learns; it does not bind three prompts to three buttons, see the README's gate section)."""
    seed: int = 0
    """Training/collection seed (evaluation seeds are fixed and disjoint from it); a run with another seed saves
    its results as recap_sim_bench_seed<N>.json."""
    train_seeds: tuple[int, ...] = ()
    """Policy training seeds: every arm (controls included) is trained once per seed on the same data (collected,
    valued and labelled with --seed and the first training seed's policy); paired tests per seed and one combined
    test over them. Empty: --seed alone. A run with several saves as <name>_train_seeds<a>_<b>...json."""
    save_results: bool = True
    """Copy the results of a full-budget run into benchmarks/results/ (toy runs are never saved there)."""


def main(args: Args) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from openpi.sim import experiment

    config = experiment.fresh_config(args.env, args.out, args.budget, args.seed, args.tasks, args.train_seeds)
    out = config.out_dir
    results = experiment.run(config)
    print(experiment.table(results))
    grades = {k: results[k] for k in ("labels", "control_labels", "value", "total_s")}
    print(json.dumps(grades, indent=2))
    if args.save_results and args.budget == "full":
        import run_all

        results["machine"] = run_all.machine_description()
        name = "recap_sim_bench" if args.env == "tabletop" else f"recap_sim_bench_{args.env}"
        default = experiment.config_for_env(args.env, out, experiment.BUDGETS[args.budget]).tasks
        if args.tasks and tuple(args.tasks) != default:
            name += "".join(f"_{task}" for task in args.tasks)
        if args.seed != 0:
            name += f"_seed{args.seed}"
        if len(args.train_seeds) > 1:
            name += "_train_seeds" + "_".join(str(s) for s in args.train_seeds)
        # Compact: every episode of every arm and seed is in it (a three-seed run is ~3 MB this way, 6 MB indented).
        (RESULTS / f"{name}.json").write_text(json.dumps(results, separators=(",", ":")) + "\n")
        shutil.copyfile(out / "success_vs_iteration.png", RESULTS / f"{name}.png")
        shutil.copyfile(out / "table.txt", RESULTS / f"{name}.txt")
        print(f"Wrote {RESULTS / f'{name}.json'}")
    return results


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="recap_sim_bench")
