"""The learnability gate: can a policy config learn the simulated task at all, from clean expert demonstrations?

Why: a comparison of methods (BC vs RECAP) on a policy that cannot learn the task compares two failures. Before
any such comparison, BC on noise-free expert demonstrations must succeed on layouts it has never seen. The gate
runs the project's real path end to end: the scripted expert through `openpi.sim.rollout` into a LeRobot
dataset (`openpi.sim.dataset`), norm stats and training through `openpi.training` (the real model, trainer and
loader), and closed-loop evaluation of the served checkpoint over the websocket client
(`openpi.sim.experiment.serve` / `evaluate`).

Seeds: demonstration layouts count up from 0; the *validation* range (`VALIDATION_SEED`) is where settings are
chosen; the *evaluation* range (`experiment.EVAL_SEED`, or any `--eval-seed` a re-run picks) is only ever
reported. Each layout can be demonstrated under every task's prompt (`all_prompts`), so that the same image
with a different prompt has a different target: the only way to fit such data is to read the prompt.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

from openpi.sim import experiment as _experiment
from openpi.sim import metrics as _metrics
from openpi.sim import rollout as _rollout

# Settings are chosen on this seed block, never on the evaluation seeds (experiment.EVAL_SEED).
VALIDATION_SEED = 700_000


@dataclasses.dataclass(frozen=True)
class Arm:
    """One trained policy of the gate: a registered config plus model/TrainConfig overrides (what a sweep varies)."""

    name: str
    config_name: str = "sim_pi05"
    # Pi0Config fields to override (e.g. {"siglip_posemb": "sincos2d"}).
    model: tuple[tuple[str, Any], ...] = ()
    # TrainConfig fields to override (e.g. {"num_train_steps": 3000}).
    train: tuple[tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class GateConfig:
    out_dir: pathlib.Path
    env: str = "tabletop"
    """The sim (`openpi.sim.registry`): tabletop, or metaworld from state (`tasks` then names its tasks)."""
    layouts: int = 600
    """Distinct demonstration layouts (seeds 0..layouts-1)."""
    all_prompts: bool = True
    """Demonstrate every layout under every task's prompt (else each task gets its own layouts)."""
    tasks: tuple[str, ...] | None = None
    """None: all three tabletop tasks; one task alone is the diagnostic that needs no prompt."""
    eval_seed: int = _experiment.EVAL_SEED
    """First evaluation seed (task i uses eval_seed + 10,000 i + k); VALIDATION_SEED while choosing settings."""
    eval_per_task: int = 67
    batch_size: int = 32
    seed: int = 0
    replan_steps: int = 5
    num_clients: int = 2


def demonstrations(config: GateConfig, envs: dict[str, Any]) -> list[_rollout.Episode]:
    """Noise-free expert episodes of `layouts` seeds per task, the same layouts under every prompt by default."""
    return _experiment.collect_expert(envs, block=0, per_task=config.layouts, quality=1.0, human=True,
                                      operator=False, seed=config.seed, same_layouts=config.all_prompts)  # fmt: skip


def _experiment_config(config: GateConfig, arm: Arm, steps: int) -> _experiment.ExperimentConfig:
    budget = dataclasses.replace(
        _experiment.Budget(),
        policy_steps=steps,
        batch_size=config.batch_size,
        eval_per_task=config.eval_per_task,
        replan_steps=config.replan_steps,
        num_clients=config.num_clients,
    )
    return _experiment.ExperimentConfig(
        out_dir=config.out_dir,
        env=config.env,
        budget=budget,
        seed=config.seed,
        tasks=config.tasks,
        bc_config=arm.config_name,
    )


def run_arm(config: GateConfig, arm: Arm, data_root: pathlib.Path, envs: dict[str, Any]) -> dict[str, Any]:
    """Trains one arm on the demonstrations and evaluates it closed-loop; returns its JSON-ready record."""
    from openpi.training import config as _config

    base = _config.get_config(arm.config_name)
    model = dataclasses.replace(base.model, **dict(arm.model))
    train = dict(arm.train)
    steps = int(train.pop("num_train_steps", base.num_train_steps))
    exp = _experiment_config(config, arm, steps)
    start = time.monotonic()
    trained = _experiment.train_policy(exp, arm.name, arm.config_name, data_root, overrides={"model": model, **train})
    train_s = time.monotonic() - start
    start = time.monotonic()
    with _experiment.serve(trained) as port:
        episodes = _experiment.evaluate_episodes(exp, envs, port, adv_ind=None, seed=config.eval_seed)
    summary = _metrics.summarize(episodes)
    overall = summary["overall"]
    return {
        "arm": arm.name,
        "config": arm.config_name,
        "model_overrides": dict(arm.model),
        "train_overrides": {"num_train_steps": steps, **train},
        "steps": steps,
        "batch_size": config.batch_size,
        "train_seconds": round(train_s, 1),
        "eval_seconds": round(time.monotonic() - start, 1),
        "successes": overall["successes"],
        "episodes": overall["episodes"],
        "success_rate": overall["success_rate"],
        "ci95": overall["ci95"],
        "tasks": summary["tasks"],
        # Every episode, so that intervals recompute and arms compare pairwise on the same seeds.
        "episode_records": [
            {"task": e.task, "seed": e.seed, "success": bool(e.success), "steps": e.steps} for e in episodes
        ],
    }


def run(config: GateConfig, arms: list[Arm]) -> dict[str, Any]:
    """Writes the demonstrations once, then trains and evaluates every arm on them."""
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    exp = _experiment_config(config, arms[0], 1)
    envs = _experiment.make_envs(exp)
    _experiment.prepare_run_dir(out)
    start = time.monotonic()
    episodes = demonstrations(config, envs)
    image_size = exp.image_size if next(iter(envs.values())).cameras else None
    data_root = _experiment.write_episodes(out / "data" / "demos", episodes, envs, image_size)
    data_s = time.monotonic() - start
    results: dict[str, Any] = {
        "gate": dataclasses.asdict(config) | {"out_dir": str(out)},
        "demonstrations": {
            "episodes": len(episodes),
            "frames": int(sum(ep.length for ep in episodes)),
            "seconds": round(data_s, 1),
        },
        "arms": [],
    }
    for arm in arms:
        results["arms"].append(run_arm(config, arm, data_root, envs))
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{'arm':28s} {'steps':>6s} {'train s':>8s} {'success':>8s} {'95% CI':>16s}",
        "-" * 70,
    ]
    for r in results["arms"]:
        low, high = r["ci95"]
        lines.append(
            f"{r['arm']:28s} {r['steps']:6d} {r['train_seconds']:8.0f} "
            f"{r['successes']:>4d}/{r['episodes']:<3d} [{low:.3f}, {high:.3f}]"
        )
    return "\n".join(lines)
