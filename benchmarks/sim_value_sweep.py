"""Which settings let the sim value model see: held-out Spearman per lever, on a validation seed range.

    uv run benchmarks/sim_value_sweep.py                     # press_red, the experiment's initial data (~15 min)
    uv run benchmarks/sim_value_sweep.py --variants state_800 --budget toy

The value model (`value_sim`) is trained on the RECAP experiment's iteration-0 data (`experiment.collect_initial`,
same budget) and scored on two validation held-out sets of the mediocre policy (never the experiment's held-out
seeds): one corrected by the operator (the process the training data come from) and one not. Each row also shows
what the env's own progress measure (minus the gripper's distance to the prompted button) reaches on the same
frames: the ceiling for a model that reads the scene perfectly but cannot foresee hesitations or the operator.
Writes `<out>/results.json`; the default run also `benchmarks/results/sim_value_sweep.json`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import sys
import time
from typing import Literal

from openpi.shared import errors

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VALUE_VALIDATION_SEED = 600_000  # held-out validation layouts, apart from every range the experiment uses

# name -> (steps, model fields, peak learning rate or None for the config's)
VARIANTS: dict[str, tuple[int, dict, float | None]] = {
    "image_400": (400, {"prompt_format": "task"}, None),
    "image_1500": (1500, {"prompt_format": "task"}, None),
    "state_400": (400, {}, None),
    "state_800": (800, {}, None),
    "state_1500": (1500, {}, None),
    "state_800_lr1e-3": (800, {}, 1e-3),
    "state_800_readout_last": (800, {"readout": "last"}, None),
}


@dataclasses.dataclass(frozen=True)
class Args:
    budget: Literal["full", "toy"] = "full"
    tasks: tuple[str, ...] = ("press_red",)
    variants: tuple[str, ...] = tuple(VARIANTS)
    heldout_per_task: int = 40
    out: pathlib.Path = pathlib.Path("./sim_output/sim_value_sweep")
    save_results: bool = True


def main(args: Args) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from openpi.sim import experiment
    from openpi.training import value_config

    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        raise errors.ConfigError(f"Unknown variants {unknown}; choose from {sorted(VARIANTS)}.")
    out = args.out.expanduser().absolute()
    experiment.clean_outputs(out)
    budget = experiment.BUDGETS[args.budget]
    config = dataclasses.replace(experiment.ExperimentConfig(out_dir=out, budget=budget), tasks=args.tasks)
    experiment.prepare_run_dir(out)
    envs = experiment.make_envs(config)
    initial = experiment.collect_initial(config, envs)
    heldout = {}
    for name, operator in (("heldout_corrected", True), ("heldout_uncorrected", False)):
        episodes = experiment.collect_expert(
            envs, block=VALUE_VALIDATION_SEED, per_task=args.heldout_per_task, quality=config.mediocre_quality,
            human=False, operator=operator, seed=config.seed + 300,
        )  # fmt: skip
        heldout[name] = experiment.write_episodes(out / "data" / name, episodes, envs, config.image_size)
    base = value_config.get_config(config.value_config)
    results: dict = {"tasks": list(args.tasks), "budget": args.budget, "variants": {}}
    for name in args.variants:
        steps, model_fields, lr = VARIANTS[name]
        if args.budget == "toy":
            steps = budget.value_steps
        at = dataclasses.replace(config, budget=dataclasses.replace(budget, value_steps=steps))
        overrides = {"model": dataclasses.replace(base.model, **model_fields)}
        if lr is not None:  # the schedule keeps its shape; only the peak changes
            schedule = dataclasses.replace(base.lr_schedule, peak_lr=lr)
            overrides["lr_schedule"] = experiment.stretched_schedule(schedule, steps)
        start = time.monotonic()
        ckpt = experiment.train_value(at, name, initial.data, overrides)
        seconds = round(time.monotonic() - start, 1)
        row = {"steps": steps, "model": model_fields, "peak_lr": lr, "train_s": seconds}
        row.update({h: experiment.value_spearman(at, ckpt, root) for h, root in heldout.items()})
        results["variants"][name] = row
        logging.info("%s: %s", name, json.dumps(row))
    print(table(results))
    if args.save_results and args.budget == "full":
        import run_all

        results["machine"] = run_all.machine_description()
        (RESULTS / "sim_value_sweep.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def table(results: dict) -> str:
    head = f"{'variant':<24} {'steps':>5} {'corrected':>9} {'ceiling':>7} {'uncorr.':>7} {'ceiling':>7} {'train s':>7}"
    rows = [head, "-" * len(head)]
    for name, r in results["variants"].items():
        c, u = r["heldout_corrected"], r["heldout_uncorrected"]
        rows.append(
            f"{name:<24} {r['steps']:>5} {c['spearman_vs_return']:>9.3f} {c['progress_spearman_vs_return']:>7.3f} "
            f"{u['spearman_vs_return']:>7.3f} {u['progress_spearman_vs_return']:>7.3f} {r['train_s']:>7.1f}"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    from openpi.shared import cli

    # Bad input (an unknown flag or variant) is one sentence and exit status 2.
    cli.run(lambda args: main(cli.parse(Args, args, description=__doc__)), name="sim_value_sweep")
