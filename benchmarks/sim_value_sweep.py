"""The sim value model's levers (issue 27.1), scored on validation layouts only: held-out Spearman per lever.

    uv run benchmarks/sim_value_sweep.py                     # press_red, the experiment's initial data (~20 min)
    uv run benchmarks/sim_value_sweep.py --variants warm warm_lr0.1 --budget toy
    uv run benchmarks/sim_value_sweep.py --env metaworld     # push-v3 from state (state token; ~8 min)

The value model (`value_sim`) is trained on the RECAP experiment's iteration-0 data (`experiment.collect_initial`,
same budget), after the iteration-0 BC policy that lends it its SigLIP (`experiment.train_policy`, as the experiment
trains it first), and scored on two validation held-out sets of the mediocre policy from seed 600,000, never the
experiment's held-out (500,000) or evaluation (1,000,000) seeds: one corrected by the operator (the process the
training data come from) and one not. Each row also shows what the env's own progress measure (minus the gripper's
distance to the prompted button) reaches on the same frames: the ceiling for a model that reads the scene perfectly
but cannot foresee hesitations or the operator.

The levers are the ones users reach for when a value model memorises: pretrained vision (here the BC policy's SigLIP,
as pi05_base's for a YAM user), frozen or at a tenth of the learning rate, steps that follow the data (epochs),
the best validation step instead of the last (early stopping on the run's own held-out episodes), and HL-Gauss
targets instead of two-hot. Rows are ranked by the mean Spearman vs return over the two validation sets.

Each row also grades the labels the variant's value model gives the same iteration-0 data (`experiment.relabel` and
`experiment.label_diagnostics`, the experiment's own lookahead and threshold): the clean share and the progress per
step of positives against negatives, what RECAP needs the value function to carry.

MetaWorld (`--env metaworld`) has no camera, so no pretrained vision to warm-start: its levers are the targets,
the readout and the epochs of the state-token value model (`value_sim_metaworld`).
Writes `<out>/results.json`; the default run also `benchmarks/results/sim_value_sweep[_metaworld].json`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import sys
import time
from typing import Any
from typing import Literal

from openpi.shared import errors

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VALUE_VALIDATION_SEED = 600_000  # held-out validation layouts, apart from every range the experiment uses

# Early stopping validates once an epoch on the value run's own held-out episodes (10 % of the training data).
_EPOCHS = {"val_every_epochs": 1.0, "early_stopping": True}
# name -> ValueTrainConfig overrides ("model": ValueModelConfig fields). Without "num_train_epochs" a variant trains
# the budget's fixed value steps (800 at full budget, about 12 epochs of the iteration-0 data).
VARIANTS: dict[str, dict[str, Any]] = {
    "fresh": {"load_pretrained": False},  # the previous default: SigLIP from scratch
    "warm": {},  # the BC policy's SigLIP, trained at the full learning rate
    "warm_lr0.1": {"siglip_lr_scale": 0.1},
    "warm_frozen": {"model": {"freeze_mode": "siglip_only"}},
    "warm_hlgauss": {"value_target": "hl_gauss"},
    "warm_epochs20_es": {"num_train_epochs": 20.0, **_EPOCHS},
    "warm_lr0.1_hlgauss": {"siglip_lr_scale": 0.1, "value_target": "hl_gauss"},
    "warm_lr0.1_epochs20_es": {"siglip_lr_scale": 0.1, "num_train_epochs": 20.0, **_EPOCHS},
    "fresh_epochs20_es": {"load_pretrained": False, "num_train_epochs": 20.0, **_EPOCHS},
}
# MetaWorld's value model has no camera (nothing to warm-start); 800 steps are ~1.8 epochs of push-v3's data.
_STATE_TOKEN_VARIANTS: dict[str, dict[str, Any]] = {
    "two_hot": {"value_target": "two_hot"},
    "hlgauss": {"value_target": "hl_gauss"},
    "hlgauss_last": {"value_target": "hl_gauss", "model": {"readout": "last"}},
    "hlgauss_epochs8": {"value_target": "hl_gauss", "num_train_epochs": 8.0},
}
VARIANTS.update(_STATE_TOKEN_VARIANTS)
DEFAULT_VARIANTS = {
    "tabletop": ("fresh", "warm", "warm_lr0.1", "warm_frozen", "warm_hlgauss", "warm_epochs20_es"),
    "metaworld": tuple(_STATE_TOKEN_VARIANTS),
}


@dataclasses.dataclass(frozen=True)
class Args:
    budget: Literal["full", "toy"] = "full"
    env: Literal["tabletop", "metaworld"] = "tabletop"
    tasks: tuple[str, ...] = ()
    """The env's tasks; default: the experiment's (tabletop press_red, MetaWorld push-v3)."""
    variants: tuple[str, ...] = ()
    """Rows to train; default: the env's set (DEFAULT_VARIANTS)."""
    heldout_per_task: int = 100
    """Episodes per task in each validation held-out set (cheap: inference only)."""
    lookaheads: tuple[int, ...] = ()
    """Also grade each row's labels at these N-step lookaheads (the values are inferred once); default: only the
    experiment's (`Budget.lookahead`)."""
    out: pathlib.Path = pathlib.Path("./sim_output/sim_value_sweep")
    save_results: bool = True


def value_overrides(base: Any, variant: dict[str, Any], toy: bool) -> dict[str, Any]:
    """ValueTrainConfig fields of one variant. At toy budget the epochs shrink to one (the plumbing, not the
    numbers, is what a toy run checks)."""
    overrides = {k: v for k, v in variant.items() if k != "model"}
    if "model" in variant:
        overrides["model"] = dataclasses.replace(base.model, **variant["model"])
    if toy and "num_train_epochs" in overrides:
        overrides["num_train_epochs"] = 1.0
    return overrides


def main(args: Args) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from openpi.sim import experiment
    from openpi.training import value_config
    from openpi.training import value_train

    variants = args.variants or DEFAULT_VARIANTS[args.env]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise errors.ConfigError(f"Unknown variants {unknown}; choose from {sorted(VARIANTS)}.")
    out = args.out.expanduser().absolute()
    experiment.clean_outputs(out)
    budget = experiment.BUDGETS[args.budget]
    config = experiment.config_for_env(args.env, out, budget)
    if args.tasks:
        config = dataclasses.replace(config, tasks=tuple(args.tasks))
    start = time.monotonic()
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
    results: dict = {"env": args.env, "tasks": list(envs), "budget": args.budget, "value_steps": budget.value_steps,
                     "value_config": config.value_config, "validation_seed": VALUE_VALIDATION_SEED,
                     "variants": {}}  # fmt: skip
    overrides = {name: value_overrides(base, VARIANTS[name], args.budget == "toy") for name in variants}
    # The warm variants start from this policy's SigLIP (experiment.train_value finds it where the experiment puts it).
    if any(o.get("load_pretrained", base.load_pretrained) for o in overrides.values()):
        bc_start = time.monotonic()
        experiment.train_policy(config, "bc", config.bc_config, initial.data)
        results["bc_train_s"] = round(time.monotonic() - bc_start, 1)
    for name in variants:
        t0 = time.monotonic()
        ckpt = experiment.train_value(config, name, initial.data, overrides[name])
        seconds = round(time.monotonic() - t0, 1)
        steps = value_train.trained_steps(ckpt)
        row: dict[str, Any] = {"overrides": VARIANTS[name], "train_s": seconds, **steps}
        row.update({h: experiment.value_spearman(config, ckpt, root) for h, root in heldout.items()})
        cache = out / "data" / f"values_{name}"
        for lookahead in sorted({budget.lookahead, *args.lookaheads}):
            at = dataclasses.replace(config, budget=dataclasses.replace(budget, lookahead=lookahead))
            relabelled = out / "data" / f"relabelled_{name}_n{lookahead}"
            experiment.relabel(at, ckpt, initial.data, relabelled, cache_dir=cache)
            key = "labels" if lookahead == budget.lookahead else f"labels_lookahead{lookahead}"
            row[key] = experiment.label_diagnostics(relabelled, budget.lookahead)
        row["mean_spearman_vs_return"] = (
            row["heldout_corrected"]["spearman_vs_return"] + row["heldout_uncorrected"]["spearman_vs_return"]
        ) / 2
        results["variants"][name] = row
        logging.info("%s: %s", name, json.dumps(row))
    results["ranking"] = sorted(results["variants"], key=lambda n: -results["variants"][n]["mean_spearman_vs_return"])
    results["total_s"] = round(time.monotonic() - start, 1)
    print(table(results))
    if args.save_results and args.budget == "full":
        import run_all

        results["machine"] = run_all.machine_description()
        name = "sim_value_sweep" if args.env == "tabletop" else f"sim_value_sweep_{args.env}"
        (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def table(results: dict) -> str:
    head = (f"{'variant':<24} {'steps':>5} {'kept':>5} {'corrected':>9} {'ceiling':>7} {'uncorr.':>7} {'ceiling':>7} "
            f"{'mean':>6} {'clean +/-':>11} {'progress +/-':>15} {'train s':>7}")  # fmt: skip
    rows = [head, "-" * len(head)]
    for name in results["ranking"]:
        r = results["variants"][name]
        c, u = r["heldout_corrected"], r["heldout_uncorrected"]
        rows.append(
            f"{name:<24} {r['steps_trained']:>5} {r['checkpoint_step']:>5} {c['spearman_vs_return']:>9.3f} "
            f"{c['progress_spearman_vs_return']:>7.3f} {u['spearman_vs_return']:>7.3f} "
            f"{u['progress_spearman_vs_return']:>7.3f} {r['mean_spearman_vs_return']:>6.3f} "
            f"{_pair(r['labels'], 'clean_fraction', '.2f'):>11} {_pair(r['labels'], 'progress_gain', '.4f'):>15} "
            f"{r['train_s']:>7.1f}"
        )
        for key in sorted(k for k in r if k.startswith("labels_lookahead")):
            n = key.removeprefix("labels_lookahead")
            rows.append(
                f"  labels at lookahead {n:<3}{'':>53}"
                f"{_pair(r[key], 'clean_fraction', '.2f'):>11} {_pair(r[key], 'progress_gain', '.4f'):>15}"
            )
    return "\n".join(rows)


def _pair(labels: dict, grade: str, fmt: str) -> str:
    """'positives/negatives' of one label grade (n/a where a toy run has no frame of one side)."""
    values = (labels.get(f"{grade}_of_positive"), labels.get(f"{grade}_of_negative"))
    return "/".join("n/a" if v is None or v != v else format(v, fmt) for v in values)


if __name__ == "__main__":
    from openpi.shared import cli

    # Bad input (an unknown flag or variant) is one sentence and exit status 2.
    cli.run(lambda args: main(cli.parse(Args, args, description=__doc__)), name="sim_value_sweep")
