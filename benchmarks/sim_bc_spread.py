"""How far BC's success moves with the training seed alone, per training budget: the instrument's resolution.

The experiment's BC arm on identical data and identical evaluation read 27.8 %, 56.8 % and 26.4 % with training
seeds 0, 1 and 2: a 30-point spread that hides every effect of 5-10 points. This trains BC on the experiment's own
iteration-0 data (same collection as `recap_sim_bench.py` with the same `--seed`) once per training seed and per
setting (steps, peak learning rate, batch size), evaluates every checkpoint on the *validation* layouts
(`gate.VALIDATION_SEED`, never the experiment's evaluation seeds) and reports, per setting, each seed's success, the
spread (max - min) and the mean. The trainings run side by side on the experiment's schedule
(`Budget.train_processes`).

    uv run benchmarks/sim_bc_spread.py                                   # 1,500 and 3,000 steps x seeds 0 1 2
    uv run benchmarks/sim_bc_spread.py --steps 1500 --peak-lrs 3e-4 --save-as sim_bc_spread_lr3e-4

Writes `<out>/results.json` and benchmarks/results/<save_as>.json (default sim_bc_spread; with the machine and its
load average).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Args:
    steps: tuple[int, ...] = (1500, 3000)
    peak_lrs: tuple[float, ...] = (1e-3,)
    batch_sizes: tuple[int, ...] = (32,)
    train_seeds: tuple[int, ...] = (0, 1, 2)
    eval_per_task: int = 200
    """Validation layouts per task (Wilson half-width ~7 points at 50 %)."""
    seed: int = 0
    """Collection seed of the iteration-0 data (the experiment's `--seed`)."""
    budget: str = "full"
    """The experiment budget whose data collection and schedule are used (`toy` for a smoke run)."""
    out: pathlib.Path = pathlib.Path("./sim_output/sim_bc_spread")
    save_results: bool = True
    save_as: str = "sim_bc_spread"
    """Name of the JSON under benchmarks/results/ (another name keeps an earlier study's file)."""


def setting_name(steps: int, peak_lr: float, batch_size: int) -> str:
    return f"steps{steps}_lr{peak_lr:g}_bs{batch_size}"


def spread(rates: list[float]) -> dict:
    """Max - min and mean of per-seed success rates (a pure function, the table's two summary numbers)."""
    return {"spread": max(rates) - min(rates), "mean": sum(rates) / len(rates)}


def main(args: Args) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run_all

    from openpi.sim import experiment
    from openpi.sim import gate

    out = args.out.expanduser().absolute()
    experiment.clean_outputs(out)
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    budget = dataclasses.replace(experiment.BUDGETS[args.budget], eval_per_task=args.eval_per_task)
    config = experiment.config_for_env("tabletop", out, budget, args.seed)
    experiment.prepare_run_dir(out)
    envs = experiment.make_envs(config)
    initial = experiment.collect_initial(config, envs)
    arms, names = [], []
    for steps, lr, batch, seed in itertools.product(args.steps, args.peak_lrs, args.batch_sizes, args.train_seeds):
        base = experiment.stretched_schedule(_bc_schedule(config), steps)
        overrides = {"seed": seed, "num_train_steps": steps, "save_interval": steps, "batch_size": batch,
                     "log_interval": max(1, steps // 10), "lr_schedule": dataclasses.replace(base, peak_lr=lr)}  # fmt: skip
        names.append((setting_name(steps, lr, batch), seed))
        arms.append((f"bc_{names[-1][0]}_seed{seed}", config.bc_config, initial.data, overrides))
    trained = experiment.train_policies(config, arms)
    train_s = time.monotonic() - start
    settings: dict[str, dict] = {}
    for (name, seed), arm in zip(names, trained, strict=True):
        summary = experiment.evaluate_summary(config, envs, arm, adv_ind=None, seed=gate.VALIDATION_SEED)
        entry = settings.setdefault(name, {"seeds": {}, "episodes": {}})
        entry["seeds"][str(seed)] = summary["overall"]
        entry["episodes"][str(seed)] = summary["episodes"]
    for entry in settings.values():
        entry.update(spread([s["success_rate"] for s in entry["seeds"].values()]))
    header = f"{'setting':26s} " + " ".join(f"{'seed ' + str(s):>8s}" for s in args.train_seeds)
    header += f" {'spread':>7s} {'mean':>6s}"
    print(header)
    print("-" * len(header))
    for name, entry in settings.items():
        rates = " ".join(f"{entry['seeds'][str(s)]['success_rate']:8.3f}" for s in args.train_seeds)
        print(f"{name:26s} {rates} {entry['spread']:7.3f} {entry['mean']:6.3f}")
    results = {
        "settings": settings,
        "tasks": list(envs),
        "eval_seed": gate.VALIDATION_SEED,
        "eval_per_task": args.eval_per_task,
        "collection_seed": args.seed,
        "train_processes": budget.train_processes,
        "train_s": round(train_s, 1),
        "total_s": round(time.monotonic() - start, 1),
        "machine": run_all.machine_description(),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.save_results:
        path = RESULTS / f"{args.save_as}.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"Wrote {path}")
    return results


def _bc_schedule(config):
    from openpi.training import config as _config

    return _config.get_config(config.bc_config).lr_schedule


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="sim_bc_spread")
