"""RECAP's sensitivity to the two settings users ask about: the positive share (`top_percent`) and indicator dropout.

One iteration of the experiment (`openpi.sim.experiment`), with everything that does not depend on the two settings
done once: the initial data, the value model, and a BC reference arm. Then, per `top_percent`, the relabeller
writes `adv_ind` again from the same values; per dropout, pi0.6 is trained on that dataset from the same initial
weights and evaluated (served with `positive`) on the same seeds. Every arm keeps every episode, so each one is
compared with the default setting (`top_percent` 30, dropout 0.3) by an exact McNemar test on the same layouts.

The seeds are the *validation* range (`gate.VALIDATION_SEED`), never the experiment's evaluation seeds: a user who
picks a setting from this table has not picked it on the numbers the experiment reports.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

from openpi.recap import vocab
from openpi.shared import atomic
from openpi.shared import errors
from openpi.sim import experiment as _experiment
from openpi.sim import gate as _gate
from openpi.sim import metrics as _metrics

logger = logging.getLogger(__name__)

DEFAULT_SETTING = (30.0, 0.3)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    experiment: _experiment.ExperimentConfig
    top_percents: tuple[float, ...] = (10.0, 30.0, 50.0)
    dropouts: tuple[float, ...] = (0.1, 0.3)
    eval_seed: int = _gate.VALIDATION_SEED
    """First evaluation seed (task i: eval_seed + 10,000 i + k)."""
    bc_reference: bool = True
    """Also evaluate BC on all the data, on the same seeds (the floor every setting is read against); BC is trained
    either way, as the value model's SigLIP source."""


def arm_name(top_percent: float, dropout: float) -> str:
    return f"recap_top{top_percent:g}_drop{dropout:g}"


def check_grid(top_percents: tuple[float, ...], dropouts: tuple[float, ...]) -> None:
    """Every setting is compared with the default, so the grid must contain it."""
    if DEFAULT_SETTING[0] not in top_percents or DEFAULT_SETTING[1] not in dropouts:
        raise errors.ConfigError(
            f"The sweep compares every setting with the default (top_percent {DEFAULT_SETTING[0]:g}, dropout "
            f"{DEFAULT_SETTING[1]:g}); include both values in --top-percents and --dropouts."
        )


def run(sweep: SweepConfig) -> dict[str, Any]:
    """Runs the sweep under `sweep.experiment.out_dir`; returns (and writes) the results."""
    config = sweep.experiment
    check_grid(sweep.top_percents, sweep.dropouts)
    start = time.monotonic()
    _experiment.prepare_run_dir(config.out_dir)
    envs = _experiment.make_envs(config)
    results: dict[str, Any] = {"budget": dataclasses.asdict(config.budget), "env": config.env, "tasks": list(envs),
                               "seed": config.seed, "eval_seed": sweep.eval_seed, "arms": {}, "labels": {}}  # fmt: skip
    initial = _experiment.collect_initial(config, envs)

    def evaluate(name: str, trained: _experiment.Trained, adv_ind: str | None, top_percent=None) -> None:
        summary = _experiment.evaluate_summary(config, envs, trained, adv_ind=adv_ind, seed=sweep.eval_seed)
        # What the trainer really used, read back from the arm's TrainConfig.
        settings = {"top_percent": top_percent, "indicator_dropout": trained.config.resolved_indicator_dropout}
        results["arms"][name] = {"settings": settings, **summary}
        logger.info("%s: success %.3f %s", name, summary["overall"]["success_rate"], summary["overall"]["ci95"])

    # BC is trained either way: the value model starts from its SigLIP (the sim's pi05_base, as in the experiment).
    bc = _experiment.train_policy(config, "bc", config.bc_config, initial.data)
    if sweep.bc_reference:
        evaluate("bc", bc, None)
    value_ckpt = _experiment.train_value(config, "it1", initial.data)
    results["value"] = _experiment.value_spearman(config, value_ckpt, initial.heldout)
    for top_percent in sweep.top_percents:
        at = dataclasses.replace(config, budget=dataclasses.replace(config.budget, top_percent=top_percent))
        relabelled = config.out_dir / "data" / f"relabelled_top{top_percent:g}"
        _experiment.relabel(at, value_ckpt, initial.data, relabelled, cache_dir=config.out_dir / "cache" / "relabel")
        results["labels"][f"{top_percent:g}"] = _experiment.label_diagnostics(relabelled, config.budget.lookahead)
        for dropout in sweep.dropouts:
            name = arm_name(top_percent, dropout)
            trained = _experiment.train_policy(
                config, name, config.policy_config, relabelled, overrides={"indicator_dropout": dropout}
            )
            evaluate(name, trained, vocab.POSITIVE, top_percent)
    results["paired"] = paired_with_default(results)
    results["total_s"] = round(time.monotonic() - start, 1)
    atomic.write_text(config.out_dir / "results.json", json.dumps(results, indent=2))
    (config.out_dir / "table.txt").write_text(table(results) + "\n")
    return results


def paired_with_default(results: dict[str, Any]) -> dict[str, Any]:
    """Each setting (and BC) against the default setting, exact McNemar on the same seeds."""

    def episodes(name: str) -> list[_metrics.EpisodeResult]:
        return [_metrics.EpisodeResult(**r) for r in results["arms"][name]["episodes"]]

    default = arm_name(*DEFAULT_SETTING)
    return {
        f"{name} vs {default}": _metrics.paired_comparison(episodes(name), episodes(default))
        for name in results["arms"]
        if name != default
    }


def table(results: dict[str, Any]) -> str:
    """top_percent x dropout: success with its Wilson interval, the positive labels' clean share, and the paired
    difference to the default setting."""
    head = f"{'arm':<24} {'success':>8} {'95% CI':>15} {'clean+':>7} {'clean-':>7} {'vs default':>10} {'p':>8}"
    rows = [head, "-" * len(head)]
    for name, summary in results["arms"].items():
        o = summary["overall"]
        low, high = o["ci95"]
        labels = next((results["labels"][k] for k in results["labels"] if name.startswith(f"recap_top{k}_")), None)

        def share(key: str, labels=labels) -> str:
            return "-" if labels is None or labels[key] is None else f"{labels[key]:.2f}"

        pair = next((p for k, p in results.get("paired", {}).items() if k.startswith(f"{name} vs ")), None)
        diff = "-" if pair is None else f"{pair['difference']:+.3f}"
        p = "-" if pair is None else f"{pair['p_value']:.3g}"
        rows.append(
            f"{name:<24} {o['success_rate']:>8.3f} {f'[{low:.3f}, {high:.3f}]':>15} "
            f"{share('clean_fraction_of_positive'):>7} {share('clean_fraction_of_negative'):>7} {diff:>10} {p:>8}"
        )
    return "\n".join(rows)
