"""The control RECAP's later iterations need: BC trained on the *same* merged data as the last RECAP iteration.

RECAP's iterations 2 and 3 train on more data than iteration 1 (the policy's own rollouts with corrections are
merged in), so "iteration 3 beats BC" mixes RECAP with more data. This trains pi0.5 on the last iteration's merged
dataset of a finished experiment run (`benchmarks/recap_sim_bench.py`), evaluates it on the run's evaluation seeds
and pairs it (exact McNemar) with the run's own arms:

    uv run benchmarks/recap_sim_control.py --run ./sim_output/recap_sim_bench_press_red

Writes `<run>/control/results.json`; `--save-as NAME` also writes `benchmarks/results/NAME.json`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys

from openpi.shared import errors

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Args:
    run: pathlib.Path
    """A finished experiment's output directory (holds results.json and data/merged_it<N>)."""
    save_as: str | None = None
    """Also write benchmarks/results/<save_as>.json."""


def main(args: Args) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from openpi.sim import experiment
    from openpi.sim import metrics

    run = args.run.expanduser().absolute()
    results_path = run / "results.json"
    if not results_path.is_file():
        raise errors.ConfigError(
            f"No results.json in {run}; pass the output directory of a finished recap_sim_bench run."
        )
    results = json.loads(results_path.read_text())
    last = max(int(i) for i in results["arms"]["recap"])
    merged = run / "data" / f"merged_it{last}"
    if not merged.is_dir():
        raise errors.ConfigError(f"{merged} is missing; the run must have kept its data directory.")
    budget = dataclasses.replace(
        experiment.Budget(**results["budget"]), cfg_betas=tuple(results["budget"]["cfg_betas"])
    )
    base = experiment.config_for_env(results["env"], run / "control", budget, results["seed"])
    config = dataclasses.replace(base, tasks=tuple(results["tasks"]))
    experiment.clean_outputs(config.out_dir)
    experiment.prepare_run_dir(config.out_dir)
    envs = experiment.make_envs(config)
    name = f"bc_merged_it{last}"
    trained = experiment.train_policy(config, name, config.bc_config, merged)
    summary = experiment.evaluate_summary(config, envs, trained, adv_ind=None)

    def episodes(records):
        return [metrics.EpisodeResult(**r) for r in records]

    mine = episodes(summary["episodes"])
    paired = {
        f"{name} vs {arm}_it{it}": metrics.paired_comparison(mine, episodes(results["arms"][arm][str(it)]["episodes"]))
        for arm, it in (("recap", last), ("recap", 1), ("bc", 1), ("filtered_bc", 1))
    }
    out = {"run": str(run), "arm": name, "data": str(merged), "summary": summary, "paired": paired}
    (config.out_dir / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    o = summary["overall"]
    print(f"{name}: {o['successes']}/{o['episodes']} = {o['success_rate']:.3f} {o['ci95']}")
    for key, p in paired.items():
        print(f"{key:<36} {p['a_only']:>4} {p['b_only']:>4} {p['difference']:+.3f} p={p['p_value']:.3g}")
    if args.save_as:
        import run_all

        out["machine"] = run_all.machine_description()
        (RESULTS / f"{args.save_as}.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    from openpi.shared import cli

    # Bad input (an unknown flag, a missing run, a grid without the default) is one sentence and exit status 2.
    cli.run(lambda args: main(cli.parse(Args, args, description=__doc__)), name="recap_sim_control")
