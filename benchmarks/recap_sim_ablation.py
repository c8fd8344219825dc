"""Adds the indicator ablation and the progress-gain label grades to a finished experiment run, without retraining.

Runs of `benchmarks/recap_sim_bench.py` made before the experiment served its RECAP checkpoints with the other
indicators lack two of its diagnostics. This serves the run's RECAP checkpoints of the first and the last iteration
with `none` and `negative` on the run's own evaluation seeds (training is deterministic, so these are the
checkpoints the run evaluated), grades every iteration's labels again (`experiment.label_diagnostics`: the
progress gain of positives vs negatives), recomputes the paired tests and rewrites the run's outputs:

    uv run benchmarks/recap_sim_ablation.py --run ./sim_output/recap_sim_bench --save-as recap_sim_bench

`--save-as NAME` also rewrites `benchmarks/results/NAME.json` and its PNG (keeping the recorded machine and time).
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


def main(args: Args) -> dict:
    from openpi.sim import experiment

    run = args.run.expanduser().absolute()
    results_path = run / "results.json"
    if not results_path.is_file():
        raise errors.ConfigError(f"No results.json in {run}; pass the output directory of a recap_sim_bench run.")
    results = json.loads(results_path.read_text())
    saved_path = RESULTS / f"{args.save_as}.json" if args.save_as else None
    if saved_path is not None:
        if not saved_path.is_file():
            raise errors.ConfigError(f"{saved_path} does not exist; --save-as names a saved result of this run.")
        saved = json.loads(saved_path.read_text())
        if saved["arms"]["bc"] != results["arms"]["bc"]:
            raise errors.ConfigError(f"{saved_path} holds another run's results than {run}; check --save-as.")
    config = experiment.config_from_results(run, results)
    experiment.prepare_run_dir(run)
    envs = experiment.make_envs(config)
    iterations = sorted(int(i) for i in results["arms"]["recap"])
    for iteration in iterations:
        relabelled = run / "data" / f"relabelled_it{iteration}"
        results["labels"][str(iteration)] = experiment.label_diagnostics(relabelled, config.budget.lookahead)
        if iteration not in (iterations[0], iterations[-1]):
            continue
        trained = experiment.trained_arm(config, f"recap_it{iteration}", config.policy_config, relabelled)
        for indicator in experiment.INDICATOR_ABLATION:
            summary = experiment.evaluate_summary(config, envs, trained, adv_ind=indicator)
            results["arms"].setdefault(f"recap_{indicator}", {})[str(iteration)] = summary
            print(f"recap_{indicator} it{iteration}: {summary['overall']['success_rate']:.3f}")
    results["paired"] = experiment.paired_comparisons(results)
    experiment.write_outputs(run, results)
    print(experiment.table(results))
    if saved_path is not None:
        results["machine"] = saved.get("machine")
        saved_path.write_text(json.dumps(results, indent=2) + "\n")
        shutil.copyfile(run / "success_vs_iteration.png", saved_path.with_suffix(".png"))
        print(f"Wrote {saved_path}")
    return results


if __name__ == "__main__":
    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="recap_sim_ablation")
