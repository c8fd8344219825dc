"""How far the training seed alone moves an arm: BC and RECAP iteration 1 retrained on a finished run's own data.

An experiment run (`benchmarks/recap_sim_bench.py`) trains each arm once. Its paired tests account for the
evaluation layouts and the policy's sampling noise, not for the training seed (initial weights, batch order,
indicator dropout). This retrains BC on the run's iteration-0 data and RECAP on its iteration-1 relabelled data with
other training seeds (same data, same steps), evaluates each on the run's evaluation seeds and reports the spread,
each seed's RECAP-minus-BC difference (paired) and the run's own seed beside them:

    uv run benchmarks/recap_sim_train_seeds.py --run ./sim_output/recap_sim_bench --seeds 1 2

Writes `<run>/train_seeds/results.json`; `--save-as NAME` also writes `benchmarks/results/NAME.json`. For runs made
before `recap_sim_bench.py --train-seeds`, which trains every arm (controls included) once per seed inside the run
and adds one combined test per pair.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys

from openpi.shared import cli
from openpi.shared import errors

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Args:
    run: pathlib.Path
    """A finished experiment's output directory (holds results.json and data/)."""
    seeds: tuple[int, ...] = (1, 2)
    """Training seeds to add (the run's own seed is read from its results)."""
    save_as: str | None = None
    """Also write benchmarks/results/<save_as>.json."""


def main(args: Args) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from openpi.recap import vocab
    from openpi.sim import experiment
    from openpi.sim import metrics

    run = args.run.expanduser().absolute()
    results = experiment.read_results(run)
    if results["seed"] in args.seeds:
        raise errors.ConfigError(f"Seed {results['seed']} is the run's own; pass other --seeds.")
    # Arms train under <run>/train_seeds (its own checkpoints and assets); the data are the run's.
    config = experiment.config_from_results(run / "train_seeds", results)
    experiment.clean_outputs(config.out_dir)
    experiment.prepare_run_dir(config.out_dir)
    envs = experiment.make_envs(config)
    arms = {
        "bc": (config.bc_config, run / "data" / "it0", None),
        "recap": (config.policy_config, run / "data" / "relabelled_it1", vocab.POSITIVE),
    }
    by_seed: dict[str, dict[str, dict]] = {arm: {str(results["seed"]): results["arms"][arm]["1"]} for arm in arms}
    for seed in args.seeds:
        for arm, (config_name, data_root, adv_ind) in arms.items():
            trained = experiment.train_policy(
                config, f"{arm}_seed{seed}", config_name, data_root, overrides={"seed": seed}
            )
            by_seed[arm][str(seed)] = experiment.evaluate_summary(config, envs, trained, adv_ind=adv_ind)

    def episodes(summary):
        return [metrics.EpisodeResult(**r) for r in summary["episodes"]]

    paired = {
        seed: metrics.paired_comparison(episodes(by_seed["recap"][seed]), episodes(by_seed["bc"][seed]))
        for seed in by_seed["bc"]
    }
    rates = {arm: {s: v["overall"]["success_rate"] for s, v in per.items()} for arm, per in by_seed.items()}
    out = {"run": str(run), "run_seed": results["seed"], "seeds": list(by_seed["bc"]), "success": rates,
           "recap_vs_bc": paired, "arms": by_seed}  # fmt: skip
    (config.out_dir / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'training seed':<14} {'bc':>7} {'recap it1':>10} {'diff':>7} {'McNemar p':>10}")
    for seed in out["seeds"]:
        p = paired[seed]
        print(f"{seed:<14} {rates['bc'][seed]:>7.3f} {rates['recap'][seed]:>10.3f} {p['difference']:>+7.3f} "
              f"{p['p_value']:>10.3g}")  # fmt: skip
    if args.save_as:
        import run_all

        out["machine"] = run_all.machine_description()
        (RESULTS / f"{args.save_as}.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="recap_sim_train_seeds")
