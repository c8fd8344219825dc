"""Adds what a finished experiment run was made without: the indicator ablation and label grades, or the oracle.

Runs of `benchmarks/recap_sim_bench.py` made before the experiment served its RECAP checkpoints with the other
indicators lack two of its diagnostics; `experiment.add_indicator_ablation` adds them from the run's own
checkpoints (served with `none` and `negative`, first and last iteration) and rewrites the run's outputs.
MetaWorld runs made before its oracle (`experiment.clean_truth`) lack that control; `--oracle` trains and evaluates
it (`experiment.add_label_oracle`, iteration 1, a few minutes):

    uv run benchmarks/recap_sim_ablation.py --run ./sim_output/recap_sim_bench --save-as recap_sim_bench
    uv run benchmarks/recap_sim_ablation.py --oracle --run ./sim_output/recap_mw --save-as recap_sim_bench_metaworld

`--save-as NAME` also rewrites `benchmarks/results/NAME.json` and its PNG (keeping the recorded machine).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil

from openpi.shared import cli
from openpi.shared import errors

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Args:
    run: pathlib.Path
    """A finished experiment's output directory (holds results.json, data/ and checkpoints/)."""
    save_as: str | None = None
    """Also rewrite benchmarks/results/<save_as>.json (which must be this run's results) and its PNG."""
    oracle: bool = False
    """Add the oracle control of iteration 1 (trained and evaluated) instead of the indicator ablation."""


def main(args: Args) -> dict:
    from openpi.sim import experiment

    run = args.run.expanduser().absolute()
    before = experiment.read_results(run)
    saved_path = RESULTS / f"{args.save_as}.json" if args.save_as else None
    if saved_path is not None:
        if not saved_path.is_file():
            raise errors.ConfigError(f"{saved_path} does not exist; --save-as names a saved result of this run.")
        saved = json.loads(saved_path.read_text())
        if saved["arms"]["bc"] != before["arms"]["bc"]:
            raise errors.ConfigError(f"{saved_path} holds another run's results than {run}; check --save-as.")
    results = experiment.add_label_oracle(run) if args.oracle else experiment.add_indicator_ablation(run)
    print(experiment.table(results))
    if saved_path is not None:
        results["machine"] = saved.get("machine")
        saved_path.write_text(json.dumps(results, separators=(",", ":")) + "\n")  # compact, as recap_sim_bench
        shutil.copyfile(run / "success_vs_iteration.png", saved_path.with_suffix(".png"))
        shutil.copyfile(run / "table.txt", saved_path.with_suffix(".txt"))
        print(f"Wrote {saved_path}")
    return results


if __name__ == "__main__":
    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="recap_sim_ablation")
