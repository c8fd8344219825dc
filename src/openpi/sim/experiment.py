"""The measured RECAP experiment in simulation: BC vs filtered BC vs RECAP (and CFG), over three RECAP iterations.

One fixed seed and budget (`Budget`) decide everything:

1. **Initial data** (iteration 0): clean expert demonstrations (human frames) plus autonomous rollouts of a mediocre
   policy (the scripted expert at low quality) that the operator corrects when it stalls or is about to press a
   wrong button. Written as a LeRobot v3.0 dataset with the five RECAP columns (`openpi.sim.dataset`).
2. **Arms**, each trained from the same initial weights with the same number of steps:
   - `bc`: pi0.5 on all frames;
   - `filtered_bc`: pi0.5 on successful episodes plus the human frames of failed ones (the strong simple baseline);
   - `recap`: pi0.6 stages 3-6: value model on `value_label` -> relabel `adv_ind` -> pi0.6 on the relabelled data,
     served with `positive`; `recap_cfg1.5` / `recap_cfg2.5`: the same checkpoint served with guidance.
3. **Iterations 2 and 3**: serve the latest RECAP policy, collect new rollouts with corrections through the
   websocket client (the real path), merge with all earlier data, and redo value model -> relabel -> pi0.6 from the
   initial weights (as the paper does), then evaluate. After the last one, `bc_same_data`: pi0.5 on exactly the
   last iteration's merged data, the control that separates RECAP from "more data".

4. **Controls** at the first and the last iteration, on the same data: `recap_oracle` (labels from the simulator's
   true advantage by the relabeller's threshold rule) and `recap_shuffled` (RECAP's labels permuted within each
   task), each paired with RECAP: what RECAP gains over the shuffled labels is what its advantages carry, and the
   oracle is the most labels can give. MetaWorld's frames cannot be rebuilt from their seed: its oracle ranks by
   `clean_truth` (the scripted policy's clean actions first) and exists at iteration 1 only, where no learned policy
   has acted yet.

Every evaluation is closed-loop against a served policy (`openpi.serving` over 127.0.0.1 + `openpi_client`), on
evaluation seeds disjoint from every training seed. Training is deterministic and the servers draw their noise per
observation, so the same seed and budget repeat every episode of every arm. The same RECAP checkpoint is also served
with `none` and `negative` (first and last iteration): the indicator ablation. With several `train_seeds` every arm
is trained once per seed on the same data, each seed paired on its own and all of them in one combined test
(`metrics.combined_paired_comparison`). The simulator grades the labels (`label_diagnostics`: clean share, operator
takeovers ahead, progress, phase and true advantage of positives vs negatives, and the advantages' concordance with
the truth of each action, `action_truth`) and the value model (`grade_values`: ranks against the true return and the
time to go, foresight of the outcome, train vs held-out loss, each against the env progress's ceiling) on a fixed
held-out set and on the 10 % of each iteration's data it did not train on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import pathlib
import shutil
import time
from typing import Any

import numpy as np

from openpi.recap import vocab
from openpi.shared import errors
from openpi.shared import progress as _progress
from openpi.sim import base as _base
from openpi.sim import dataset as _dataset
from openpi.sim import expert as _expert
from openpi.sim import metrics as _metrics
from openpi.sim import operator as _operator
from openpi.sim import registry as _registry
from openpi.sim import rollout as _rollout
from openpi.sim import tabletop as _tabletop

logger = logging.getLogger(__name__)

ROOT = pathlib.Path(__file__).resolve().parents[3]
# Seed ranges: collection seeds count up from 0 per iteration block; evaluation and held-out seeds never overlap them.
COLLECT_SEED_BLOCK = 100_000
HELDOUT_SEED = 500_000
EVAL_SEED = 1_000_000
# The share of each iteration's merged episodes the value model does not train on: still relabelled like every other
# episode, they grade the value model on the distribution it labels (`value_grades`).
VALUE_HELDOUT_FRACTION = 0.1
# How many steps before an episode's end the value must already tell a success from a failure (`grade_values`).
STEPS_BEFORE_END = 5
# The training loss is read on at most this many training frames (evenly spaced): enough to compare with the held-out
# loss, while the value model's inference stays a small share of an iteration.
TRAIN_LOSS_FRAMES = 2048


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much of everything; `full` is the published experiment, `toy` proves the plumbing in a few minutes."""

    demos_per_task: int = 30
    autonomous_per_task: int = 100
    collect_per_task: int = 50
    # Evaluation and held-out episodes cost ~0.07 s each against ~4 min per trained arm: a large evaluation set is
    # nearly free. With 67 the policy's own sampling noise moved one and the same BC checkpoint from 22 % to 34 %
    # between evaluations; with 500 one arm's Wilson interval is about +-4 points.
    heldout_per_task: int = 100
    eval_per_task: int = 500
    policy_steps: int = 1500
    value_steps: int = 800
    batch_size: int = 32
    iterations: int = 3
    lookahead: int = 10
    top_percent: float = 30.0
    cfg_betas: tuple[float, ...] = (1.5, 2.5)
    replan_steps: int = 5
    num_clients: int = 2
    # Independent trainings run this many at once, each in a single-threaded process (0: in this process, one after
    # another). On the 2-core machine two 1-thread processes train 1.14x faster than one process (12.9 vs 11.3
    # steps/s; two whole 600-step trainings 106 s vs 122 s, benchmarks/sim_step_bench.py).
    train_processes: int = 2


BUDGETS = {
    "full": Budget(),
    "toy": Budget(
        demos_per_task=2,
        autonomous_per_task=3,
        collect_per_task=1,
        heldout_per_task=1,
        eval_per_task=2,
        policy_steps=2,
        value_steps=2,
        batch_size=8,
        iterations=2,
        cfg_betas=(1.5,),
        train_processes=0,  # two-step trainings: a child process's start-up would cost more than the training
    ),
}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    out_dir: pathlib.Path
    env: str = "tabletop"
    budget: Budget = dataclasses.field(default_factory=Budget)
    seed: int = 0
    # None: every task of the env.
    tasks: tuple[str, ...] | None = None
    policy_config: str = "sim_pi06"
    bc_config: str = "sim_pi05"
    value_config: str = "value_sim"
    image_size: int = 32
    # Quality of the scripted expert that plays the mediocre first policy (lower = more wrong-way and hesitation).
    mediocre_quality: float = 0.3
    # Policy training seeds: every arm is trained once per seed on the same data (collections, value model and labels
    # come from `seed` and from the first training seed's RECAP policy). Empty: `seed` alone.
    train_seeds: tuple[int, ...] = ()

    @property
    def policy_seeds(self) -> tuple[int, ...]:
        return self.train_seeds or (self.seed,)


# The toy policy passes the learnability gate on one tabletop task (98.5 % from clean demonstrations) but not on
# three (9.5 %: it does not bind the colour word to a button), and an experiment on a policy that fails the gate
# measures nothing. `--tasks press_red press_green press_blue` runs the three-prompt version.
TABLETOP_TASKS = ("press_red",)
# MetaWorld's experiment runs on the task its gate is measured on.
METAWORLD_TASKS = ("push-v3",)


def config_for_env(env: str, out_dir: pathlib.Path, budget: Budget, seed: int = 0) -> ExperimentConfig:
    """The experiment's settings per env: configs, tasks, and a first policy that is mediocre in that env.

    MetaWorld's expert degrades much faster with quality than the tabletop's (quality 0.4 fails almost every
    task), so its mediocre policy is quality 0.7. Its policy is pi0 (continuous state projection) with RECAP's
    clause in the prompt: pi0.5 reads MetaWorld's 39 values only as prompt bins and fails the push-v3 gate (10 %),
    see docs/simulation.md. Its task is push-v3, the gate's; `--tasks` runs any other (`metaworld_env.TASKS`).
    """
    if env == "tabletop":
        return ExperimentConfig(out_dir=out_dir, env=env, budget=budget, seed=seed, tasks=TABLETOP_TASKS)
    if env == "metaworld":
        return ExperimentConfig(
            out_dir=out_dir,
            env=env,
            budget=budget,
            seed=seed,
            tasks=METAWORLD_TASKS,
            policy_config="sim_pi0_recap_metaworld",
            bc_config="sim_pi0_metaworld",
            value_config="value_sim_metaworld",
            mediocre_quality=0.7,
        )
    raise _base.SimError(f"No experiment settings for env {env!r}; use tabletop or metaworld.")


class _Clock:
    """Wall time per stage, for the report."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.monotonic()
        logger.info("=== %s", name)
        try:
            yield
        finally:
            self.stages[name] = round(time.monotonic() - start, 1)
            logger.info("=== %s done in %.1f s", name, self.stages[name])


# ------------------------------------------------------------------------------------------------ data


def make_envs(config: ExperimentConfig) -> dict[str, Any]:
    tasks = config.tasks or tuple(_registry.task_names(config.env))
    return {task: _rollout.make_env(config.env, task, config.image_size) for task in tasks}


def _seeds(block: int, task_i: int, n: int) -> list[int]:
    return [block + task_i * 10_000 + i for i in range(n)]


def collect_expert(
    envs, *, block: int, per_task: int, quality: float, human: bool, operator: bool, seed: int, same_layouts=False
):
    """Episodes of the scripted expert per task (demonstrations, or the mediocre autonomous policy + operator).

    `same_layouts`: every task uses the seeds block..block+per_task-1 (one layout under every prompt) instead of
    a seed range of its own."""
    episodes = []
    for i, (_, env) in enumerate(envs.items()):

        def agent(environment, i=i):
            # noise_scale=0: between its hesitations and wrong-way segments the mediocre policy acts exactly as the
            # expert, so every frame is either clean or not (what the label diagnostics measure).
            expert = _expert.ScriptedExpert(quality, seed=seed + i, noise_scale=0.0)
            inner = _rollout.ExpertAgent(environment, expert, human=human)
            return (
                _rollout.CorrectedAgent(environment, inner, _operator.Operator.for_env(environment.env))
                if operator
                else inner
            )

        seeds = list(range(block, block + per_task)) if same_layouts else _seeds(block, i, per_task)
        episodes += _rollout.run_episodes(env, seeds, agent)
    return episodes


def _served_episodes(config: ExperimentConfig, port: int, jobs, *, operator: bool, adv_ind: str | None, label: str,
                     keep_frames: bool) -> list[_rollout.Episode]:  # fmt: skip
    """Episodes of the served policy (one websocket client per worker), optionally corrected by the operator."""
    from openpi_client import websocket_client_policy

    budget = config.budget

    def make_agent(environment, client):
        agent = _rollout.policy_agent_over(client, environment.env.action_dim, budget.replan_steps, adv_ind)
        return (
            _rollout.CorrectedAgent(environment, agent, _operator.Operator.for_env(environment.env))
            if operator
            else agent
        )

    return _rollout.run_jobs(
        jobs,
        env_name=config.env,
        image_size=config.image_size,
        make_agent=make_agent,
        make_worker_state=lambda: websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port),
        close_worker_state=lambda client: client.close(),
        num_workers=budget.num_clients,
        keep_frames=keep_frames,
        progress=_progress.Progress(len(jobs), label, unit="episodes", interval_s=2.0),
    )


def collect_policy(config: ExperimentConfig, envs, port: int, *, block: int) -> list[_rollout.Episode]:
    """Autonomous rollouts of the served policy (conditioned on `positive`), corrected by the operator."""
    jobs = [(task, seed) for i, task in enumerate(envs) for seed in _seeds(block, i, config.budget.collect_per_task)]
    return _served_episodes(
        config, port, jobs, operator=True, adv_ind=vocab.POSITIVE, label="collect", keep_frames=True
    )


def filtered_for_bc(episodes: list[_rollout.Episode]) -> list[_rollout.Episode]:
    """Successful episodes whole, and from failed ones only their human segments (each as its own episode)."""
    out = []
    for ep in episodes:
        if ep.success:
            out.append(ep)
            continue
        flags = np.asarray(ep.intervention, bool)
        start = None
        for t in range(len(flags) + 1):
            inside = t < len(flags) and flags[t]
            if inside and start is None:
                start = t
            elif not inside and start is not None:
                out.append(_slice(ep, start, t))
                start = None
    return out


def _slice(ep: _rollout.Episode, start: int, stop: int) -> _rollout.Episode:
    # A correction ends with the operator handing back, not with a failure: keep it as a short successful segment
    # only for BC's purposes (filtered BC ignores outcomes beyond the selection).
    return dataclasses.replace(
        ep,
        images={k: v[start:stop] for k, v in ep.images.items()},
        states=ep.states[start:stop],
        actions=ep.actions[start:stop],
        intervention=ep.intervention[start:stop],
        clean=ep.clean[start:stop],
        progress=ep.progress[start:stop],
        success=True,
    )


def write_episodes(root: pathlib.Path, episodes, envs: dict[str, Any], image_size: int | None) -> pathlib.Path:
    env = next(iter(envs.values()))
    limits = {e.prompt: e.max_steps for e in envs.values()}
    _dataset.write_dataset(root, episodes, env, image_size=image_size, task_max_steps=limits, overwrite=True)
    return root


# ------------------------------------------------------------------------------------------------ training


def _latest_step(run_dir: pathlib.Path) -> pathlib.Path:
    children = run_dir.iterdir() if run_dir.is_dir() else ()
    steps = sorted((p for p in children if p.name.isdigit()), key=lambda p: int(p.name))
    if not steps:
        raise errors.CheckpointError(f"No checkpoint step in {run_dir}; train that run first.")
    return steps[-1]


def stretched_schedule(schedule: Any, steps: int) -> Any:
    """The config's cosine schedule stretched (or shrunk) to `steps`, warm-up at most a tenth of them."""
    return dataclasses.replace(
        schedule, warmup_steps=min(schedule.warmup_steps, max(1, steps // 10)), decay_steps=steps
    )


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained arm: the exact TrainConfig it was trained with (serving rebuilds its pipeline) and its last step."""

    config: Any
    step_dir: pathlib.Path


def policy_train_config(
    config: ExperimentConfig,
    name: str,
    config_name: str,
    data_root: pathlib.Path,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """One arm's TrainConfig on `data_root`, its norm stats computed; `overrides`: TrainConfig fields (e.g. model)."""
    from openpi.training import config as _config
    from openpi.training import norm_stats

    budget = config.budget
    base = _config.get_config(config_name)
    assets = config.out_dir / "assets" / name
    data = dataclasses.replace(base.data, repo_id=str(data_root), assets=_config.AssetsConfig(asset_id=name))
    steps = budget.policy_steps
    train_config = dataclasses.replace(
        base,
        exp_name=name,
        data=data,
        assets_base_dir=str(assets),
        checkpoint_base_dir=str(config.out_dir / "checkpoints"),
        num_train_steps=steps,
        save_interval=steps,
        log_interval=max(1, steps // 10),
        batch_size=budget.batch_size,
        seed=config.seed,
        overwrite=True,
        lr_schedule=stretched_schedule(base.lr_schedule, steps),
    )
    if overrides:
        train_config = dataclasses.replace(train_config, **overrides)
    norm_stats.run(norm_stats.Args(target=config_name, repo_id=str(data_root), assets_base_dir=assets, asset_id=name,
                                   output_dir=train_config.assets_dirs / name))  # fmt: skip
    return train_config


def train_policy(
    config: ExperimentConfig,
    name: str,
    config_name: str,
    data_root: pathlib.Path,
    overrides: dict[str, Any] | None = None,
) -> Trained:
    """Norm stats + training of one arm through the project's trainer (see `policy_train_config`)."""
    return train_policies(config, [(name, config_name, data_root, overrides)])[0]


def train_policies(
    config: ExperimentConfig, arms: list[tuple[str, str, pathlib.Path, dict[str, Any] | None]]
) -> list[Trained]:
    """Trains independent arms (name, config name, data, overrides) on the budget's schedule: `train_processes`
    single-threaded processes side by side (`openpi.training.parallel`), or 0 for this process, one after another.

    The schedule is part of the budget, not chosen from the load, so a rerun trains the same floats."""
    from openpi.training import parallel

    configs = [policy_train_config(config, *arm) for arm in arms]
    # A lone training has nobody to share the cores with: it runs here, without a child's start-up.
    parallel.train_in_processes(configs, config.budget.train_processes if len(configs) > 1 else 0, echo=logger.info)
    return [Trained(c, _latest_step(c.checkpoint_dir)) for c in configs]


def trained_arm(config: ExperimentConfig, name: str, config_name: str, data_root: pathlib.Path) -> Trained:
    """An arm a finished run in `config.out_dir` trained: its TrainConfig rebuilt and its last step (nothing is
    retrained; training is deterministic, so this is the checkpoint the run evaluated)."""
    train_config = policy_train_config(config, name, config_name, data_root)
    return Trained(train_config, _latest_step(train_config.checkpoint_dir))


def train_value(
    config: ExperimentConfig, name: str, data_root: pathlib.Path, overrides: dict[str, Any] | None = None
) -> pathlib.Path:
    """The value model of `config.value_config` on `data_root`; `overrides`: ValueTrainConfig fields (e.g. model).

    It trains on the episodes `value_split` does not hold out (the trainer's own episode split, validated on the
    rest)."""
    from openpi.training import norm_stats
    from openpi.training import value_config as _value_config
    from openpi.training import value_train

    budget = config.budget
    base = _value_config.get_config(config.value_config)
    steps = budget.value_steps
    # The sim's pi05_base is the BC policy of iteration 0 (trained first): a pretrained value model starts from its
    # SigLIP, through the loader a YAM user takes with pi05_base.
    bc_run = config.out_dir / "checkpoints" / config.bc_config / "bc"
    pretrained = {"siglip_path": str(_latest_step(bc_run) / "params")} if base.load_pretrained else {}
    value_cfg = dataclasses.replace(
        base,
        **pretrained,
        exp_name=name,
        data=dataclasses.replace(base.data, repo_id=str(data_root)),
        checkpoint_dir_override=str(config.out_dir / "checkpoints" / "value" / name),
        num_train_steps=steps,
        save_interval=steps,
        val_interval=steps,
        log_interval=max(1, steps // 10),
        batch_size=budget.batch_size,
        seed=config.seed,
        overwrite=True,
        assets_base_dir=str(config.out_dir / "assets"),
        lr_schedule=stretched_schedule(base.lr_schedule, steps),
    )
    if overrides:
        value_cfg = dataclasses.replace(value_cfg, **overrides)
    # Set last, so no override can move it: the episodes `value_grades` calls held out are the ones the trainer (and
    # its state norm stats) never saw.
    split = {"val_fraction": VALUE_HELDOUT_FRACTION, "split_seed": config.seed}
    value_cfg = dataclasses.replace(value_cfg, data=dataclasses.replace(value_cfg.data, **split))
    norm_stats.write_for_config(value_cfg)
    value_train.train(value_cfg)
    return value_cfg.checkpoint_dir


def relabel(
    config: ExperimentConfig,
    value_ckpt: pathlib.Path,
    src: pathlib.Path,
    dst: pathlib.Path,
    cache_dir: pathlib.Path | None = None,
):
    """`adv_ind` for `src` from `value_ckpt`, written to `dst`; relabellings of the same data by the same checkpoint
    (e.g. at several `top_percent`) share `cache_dir`, so the values are inferred once. Each frame's advantage (NaN
    on human frames) is kept beside the dataset (`advantage_path`): the labels keep only its side of the threshold,
    and `label_diagnostics` grades the advantage itself against the simulator's truth."""
    from openpi.relabel import relabel as _relabel
    from openpi.shared import atomic

    out = _relabel.relabel(
        _relabel.RelabelConfig(
            data_dir=str(src),
            checkpoint_dir=str(value_ckpt),
            output_dir=str(dst),
            overwrite=True,
            lookahead=config.budget.lookahead,
            top_percent=config.budget.top_percent,
            batch_size=config.budget.batch_size,
            cache_dir=str(cache_dir) if cache_dir else None,
        )
    )
    buffer = io.BytesIO()
    np.save(buffer, out.result.advantage)
    atomic.write_bytes(advantage_path(dst), buffer.getvalue())
    return out


def advantage_path(relabelled: pathlib.Path) -> pathlib.Path:
    """Where `relabel` keeps the relabeller's per-frame advantages of the dataset `relabelled` (beside it)."""
    return relabelled.parent / f"{relabelled.name}.advantage.npy"


# ------------------------------------------------------------------------------------------------ diagnostics


def label_diagnostics(
    relabelled: pathlib.Path, lookahead: int = Budget.lookahead, truth: np.ndarray | None = None
) -> dict[str, Any]:
    """How good the labels are among autonomous frames, graded by what only the simulator knows, for positives
    against negatives:

    - the clean share: how often the label sits on a noise-free expert action. Only the scripted mediocre policy
      can act clean; a learned policy's own rollouts (iterations 2+) never do, so there it only grades the
      iteration-0 frames;
    - the takeover share: how often the operator takes over within the next `lookahead` frames (it does when
      progress stalls or a wrong button is near), for any policy's frames;
    - the progress gain: the env's own progress (`sim.progress`) the frame's action made up to the next frame, the
      true progress per step;
    - the steps left to the episode's end: a value model that regresses to the mean gives late frames high
      advantages, so positives that sit late say that the labels encode the phase of the episode;
    - with `truth` (`action_truth` of the same frames): the true advantage of positives and negatives, and, where
      `relabel` kept the advantages, how well they order the actions as the truth does (`concordance_auc` per task).
    """
    from openpi.datasets import lerobot

    ds = lerobot.LeRobotDataset.open(relabelled)
    saved = advantage_path(relabelled)
    return grade_labels(
        labels=np.asarray(ds.column(vocab.ADV_IND)).reshape(-1),
        human=np.asarray(ds.column(vocab.INTERVENTION)).reshape(-1) == 1,
        clean=np.asarray(ds.column(_dataset.CLEAN_ACTION)).reshape(-1) == 1,
        progress=np.asarray(ds.column(_dataset.PROGRESS), np.float64).reshape(-1),
        episode_ends=[ep.to_index for ep in ds.episodes],
        lookahead=lookahead,
        task_index=np.asarray(ds.column(vocab.TASK_INDEX)).reshape(-1),
        advantage=np.load(saved) if saved.is_file() else None,
        true_advantage=truth,
    )


def grade_labels(*, labels: np.ndarray, human: np.ndarray, clean: np.ndarray, progress: np.ndarray,
                 episode_ends: list[int], lookahead: int, task_index: np.ndarray | None = None,
                 advantage: np.ndarray | None = None,
                 true_advantage: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """`label_diagnostics` on per-frame arrays (episodes back to back, each ending before its `episode_ends`)."""
    gain = np.full(len(progress), np.nan)
    takeover = np.zeros(len(progress), bool)
    steps_left = np.zeros(len(progress))
    for start, end in zip([0, *episode_ends[:-1]], episode_ends, strict=True):
        gain[start : end - 1] = np.diff(progress[start:end])  # the last frame has no next observation
        flags = human[start:end]
        takeover[start:end] = [flags[t + 1 : t + 1 + lookahead].any() for t in range(end - start)]
        steps_left[start:end] = np.arange(end - start)[::-1]
    auto = ~human
    pos = auto & (labels == vocab.POSITIVE)
    neg = auto & (labels == vocab.NEGATIVE)

    def frac(mask):
        return float(clean[mask].mean()) if mask.any() else None

    def mean(values, mask):
        mask = mask & np.isfinite(values)
        return float(values[mask].mean()) if mask.any() else None

    out = {
        "autonomous_frames": int(auto.sum()),
        "positive_frames": int(pos.sum()),
        "clean_fraction_of_positive": frac(pos),
        "clean_fraction_of_negative": frac(neg),
        "clean_fraction_of_autonomous": frac(auto),
        "takeover_fraction_of_positive": mean(takeover.astype(float), pos),
        "takeover_fraction_of_negative": mean(takeover.astype(float), neg),
        "progress_gain_of_positive": mean(gain, pos),
        "progress_gain_of_negative": mean(gain, neg),
        "steps_left_of_positive": mean(steps_left, pos),
        "steps_left_of_negative": mean(steps_left, neg),
    }
    if true_advantage is not None:
        truth = np.asarray(true_advantage, np.float64)
        out["true_advantage_of_positive"] = mean(truth, pos)
        out["true_advantage_of_negative"] = mean(truth, neg)
        if advantage is not None:
            groups = np.zeros(len(truth), np.int64) if task_index is None else np.asarray(task_index)
            out["advantage_auc_vs_truth"] = _metrics.concordance_auc(advantage[auto], truth[auto], groups[auto])
    return out


# ------------------------------------------------------------------------------------------------ the simulator's truth


def action_truth(envs: dict[str, Any], root: pathlib.Path) -> np.ndarray | None:
    """`true_advantage` of every frame of the dataset `root` (NaN on human frames), or None where the simulator
    cannot rebuild a frame's state (only the tabletop's layout follows from `sim.seed` and its state: the gripper)."""
    from openpi.datasets import lerobot

    if not all(isinstance(env, _tabletop.TabletopEnv) for env in envs.values()):
        return None
    ds = lerobot.LeRobotDataset.open(root)
    by_prompt = {env.prompt: env for env in envs.values()}
    task_index = np.asarray(ds.column(vocab.TASK_INDEX)).reshape(-1)
    return true_advantage(
        [by_prompt[ds.tasks[int(t)]] for t in task_index],
        seeds=np.asarray(ds.column(_dataset.SEED)).reshape(-1),
        states=np.asarray(ds.column("observation.state"), np.float64),
        actions=np.asarray(ds.column("action"), np.float32),
        autonomous=np.asarray(ds.column(vocab.INTERVENTION)).reshape(-1) == 0,
    )


def clean_truth(root: pathlib.Path) -> np.ndarray:
    """The coarser truth of an env whose frames cannot be rebuilt (MetaWorld): 0 where the scripted policy's action
    was the noise-free expert's (`sim.clean_action`), -1 where it was one of its hesitations or wrong-way moves, NaN
    on human frames. Valid only where every autonomous frame is the scripted policy's (iteration 1): a learned
    policy's actions are never flagged clean, whatever they are worth."""
    from openpi.datasets import lerobot

    ds = lerobot.LeRobotDataset.open(root)
    human = np.asarray(ds.column(vocab.INTERVENTION)).reshape(-1) == 1
    clean = np.asarray(ds.column(_dataset.CLEAN_ACTION)).reshape(-1) == 1
    return np.where(human, np.nan, np.where(clean, 0.0, -1.0))


def iteration_truth(envs: dict[str, Any], root: pathlib.Path, iteration: int) -> np.ndarray | None:
    """The simulator's grade of every frame of an iteration's data: `action_truth` where the env rebuilds frames,
    else `clean_truth` at iteration 1 (only the scripted policy acted), else None (no truth, no oracle)."""
    truth = action_truth(envs, root)
    if truth is None and iteration == 1:
        truth = clean_truth(root)
    return truth


def true_advantage(envs: list[Any], *, seeds: np.ndarray, states: np.ndarray, actions: np.ndarray,
                   autonomous: np.ndarray) -> np.ndarray:  # fmt: skip
    """How good each autonomous frame's executed action was, by the simulator: the progress it made in one step minus
    the progress the noise-free expert's action makes from the same state (0: as good as the expert, below: worse).

    Each frame's tabletop (`envs[i]`) is rebuilt from its episode seed (the buttons) and its state (the gripper). A
    step that ends the episode counts as reaching the target (a success) or as the farthest point of the arena (a
    wrong button; `ENDING_PROGRESS`). One step, not the return: it grades the action itself, free of what the policy
    or the operator do next, which is what the indicator is meant to single out. Human frames get NaN.
    """
    out = np.full(len(seeds), np.nan)
    for i in np.flatnonzero(np.asarray(autonomous, bool)):
        env, seed, gripper = envs[i], int(seeds[i]), states[i, :2]
        env.reset(seed, gripper=gripper)
        expert = env.expert_action()
        out[i] = _progress_made(env, seed, gripper, actions[i]) - _progress_made(env, seed, gripper, expert)
    return out


# The tabletop progress (minus the distance to the target) credited to a step that ends the episode.
ENDING_PROGRESS = {"success": 0.0, "wrong_button": -math.sqrt(2.0)}


def _progress_made(env: Any, seed: int, gripper: np.ndarray, action: np.ndarray) -> float:
    env.reset(seed, gripper=gripper)
    before = env.progress()
    env.step(action)
    return ENDING_PROGRESS.get(env.outcome, env.progress()) - before


# ------------------------------------------------------------------------------------------------ controls

# RECAP.md, "How we know the value function helps": the same data relabelled without the value model, by the
# simulator's truth (the ceiling of what labels can give) and by chance (what the indicator gives with labels that
# carry nothing). Trained at the first and the last iteration, served with `positive` and paired with RECAP.
ORACLE = "recap_oracle"
SHUFFLED = "recap_shuffled"


def oracle_labels(true_advantage: np.ndarray, task_index: np.ndarray, human: np.ndarray, top_percent: float,
                  seed: int) -> np.ndarray:  # fmt: skip
    """`adv_ind` from the simulator's true advantage by the relabeller's own rule (`advantage.task_thresholds` and
    `indicators`): per task the top `top_percent` % of autonomous frames positive, human frames positive.

    Actions tie often (every clean expert step has true advantage 0), and a threshold inside a tie would leave the
    positive share short of the relabeller's; the truth is therefore turned into ranks with ties in a seeded random
    order, so the share is exactly the relabeller's and equally good actions are equally likely to be positive.
    """
    from openpi.recap import advantage as _adv

    autonomous = ~np.asarray(human, bool)
    frames = np.flatnonzero(autonomous)
    tiebreak = np.random.default_rng([seed, 0x0AC1E]).random(len(frames))
    rank = np.zeros(len(autonomous))
    rank[frames[np.lexsort((tiebreak, np.asarray(true_advantage, np.float64)[frames]))]] = np.arange(len(frames))
    thresholds = _adv.task_thresholds(rank, task_index, autonomous, top_percent)
    return _adv.indicators(rank, task_index, autonomous, thresholds)


def shuffled_labels(labels: np.ndarray, task_index: np.ndarray, human: np.ndarray, seed: int) -> np.ndarray:
    """The relabeller's autonomous labels permuted within each task (seeded), human frames positive: the same positive
    share per task as RECAP's labels, on frames chosen by chance. What RECAP gains over this comes from its
    advantages; what this gains over BC comes from the indicator alone (human frames positive, indicator dropout)."""
    human = np.asarray(human, bool)
    task_index = np.asarray(task_index)
    out = np.where(human, vocab.POSITIVE, np.asarray(labels, object)).astype(object)
    rng = np.random.default_rng([seed, 0x5F1E])
    for task in np.unique(task_index[~human]):
        frames = np.flatnonzero(~human & (task_index == task))
        out[frames] = out[rng.permutation(frames)]
    return out


def control_seed(config: ExperimentConfig, iteration: int) -> int:
    """The seed of an iteration's shuffle and oracle tie-break: one draw per (run seed, iteration)."""
    return 1000 * config.seed + iteration


def write_controls(config: ExperimentConfig, relabelled: pathlib.Path, truth: np.ndarray | None, iteration: int,
                   arms: tuple[str, ...] = (SHUFFLED, ORACLE)) -> dict[str, pathlib.Path]:  # fmt: skip
    """The control datasets `arms` of one iteration beside `relabelled` (its frames with other `adv_ind`): arm ->
    root. The oracle needs the simulator's truth; without it (MetaWorld after iteration 1) it is not written."""
    from openpi.datasets import lerobot
    from openpi.recap import provenance

    ds = lerobot.LeRobotDataset.open(relabelled)
    human = np.asarray(ds.column(vocab.INTERVENTION)).reshape(-1) == 1
    task_index = np.asarray(ds.column(vocab.TASK_INDEX)).reshape(-1)
    seed = control_seed(config, iteration)
    labels = {}
    if SHUFFLED in arms:
        labels[SHUFFLED] = shuffled_labels(np.asarray(ds.column(vocab.ADV_IND)).reshape(-1), task_index, human, seed)
    if ORACLE in arms and truth is not None:
        labels[ORACLE] = oracle_labels(truth, task_index, human, config.budget.top_percent, seed)
    spec = {"dtype": "string", "shape": [1], "names": None}
    label_scale = (provenance.read(relabelled) or {}).get("label_scale")
    out = {}
    for arm, adv_ind in labels.items():
        root = relabelled.parent / f"{arm}_it{iteration}"
        lerobot.copy_with_columns(ds, root, {vocab.ADV_IND: adv_ind}, {vocab.ADV_IND: spec}, overwrite=True)
        # Not the relabeller's labels: meta/recap.json says where they came from instead of naming a value model.
        provenance.write(root, {"label_scale": label_scale, "control": {"arm": arm, "from": str(relabelled),
                                                                        "seed": seed}})  # fmt: skip
        out[arm] = root
    return out


def value_split(config: ExperimentConfig, num_episodes: int) -> tuple[np.ndarray, np.ndarray]:
    """(trained on, held out) episode positions of a dataset `train_value` trains on: the value trainer's own seeded
    episode split (`value_data.split_episodes`) at `VALUE_HELDOUT_FRACTION` with the run's seed, so the episodes
    graded as held out are exactly those the trainer left out."""
    from openpi.training import value_data

    return value_data.split_episodes(num_episodes, VALUE_HELDOUT_FRACTION, config.seed)


def value_outputs(
    value_ckpt: pathlib.Path, root: pathlib.Path, frames: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(expected value, training loss) of the value checkpoint at `frames` of the dataset `root`: the value trainer's
    own evaluation step (no augmentation) on the weights the relabeller reads (EMA), so the loss is the one training
    minimised and the value the one the labels come from."""
    import jax

    from openpi.training import value_checkpoint
    from openpi.training import value_data
    from openpi.training import value_train

    model, params = value_checkpoint.load_value_checkpoint(value_ckpt)
    factory = value_checkpoint.load_value_inputs(value_ckpt).item_factory(model, repo_id=str(root), with_targets=True)
    loader = value_data.create_loader(factory, frames, batch_size=batch_size, seed=0, shuffle=False, num_workers=0,
                                      num_batches=-(-len(frames) // batch_size))  # fmt: skip
    params = jax.device_put(params)
    step = jax.jit(lambda p, b: value_train.eval_step(model, p, b))
    outs = [jax.device_get(step(params, batch)) for batch in loader]
    # The last batch wraps around to full size; its extra rows are dropped.
    return tuple(np.concatenate([np.asarray(o[k], np.float64) for o in outs])[: len(frames)] for k in ("pred", "ce"))


def _graded_value(config: ExperimentConfig, value_ckpt: pathlib.Path, root: pathlib.Path, heldout_episodes) -> dict:
    """`grade_values` of the checkpoint on the dataset `root` with `heldout_episodes` (positions) held out; the loss on
    the other episodes is read on at most `TRAIN_LOSS_FRAMES` of their frames."""
    from openpi.datasets import lerobot
    from openpi.training import value_data

    ds = lerobot.LeRobotDataset.open(root)
    heldout = np.zeros(ds.num_episodes, bool)
    heldout[np.asarray(heldout_episodes, np.int64)] = True
    trained = value_data.episode_frames(ds, np.flatnonzero(~heldout))
    frames = np.concatenate([value_data.episode_frames(ds, np.flatnonzero(heldout)),
                             value_data.validation_frames(trained, TRAIN_LOSS_FRAMES)])  # fmt: skip
    values, loss = np.full(ds.num_frames, np.nan), np.full(ds.num_frames, np.nan)
    values[frames], loss[frames] = value_outputs(value_ckpt, root, frames, config.budget.batch_size)
    return grade_values(
        values=values,
        loss=loss,
        target=np.asarray(ds.column(vocab.VALUE_LABEL), np.float64).reshape(-1),
        progress=np.asarray(ds.column(_dataset.PROGRESS), np.float64).reshape(-1),
        success=np.asarray(ds.column(_dataset.SUCCESS)).reshape(-1) == 1,
        episode_ends=[ep.to_index for ep in ds.episodes],
        heldout=heldout,
    )


def value_spearman(config: ExperimentConfig, value_ckpt: pathlib.Path, heldout: pathlib.Path) -> dict[str, Any]:
    """`grade_values` on the fixed held-out set (`collect_initial`'s, the same episodes at every iteration; every
    episode held out, so no training loss): the reference that stays put while the training data grows."""
    from openpi.datasets import lerobot

    return _graded_value(config, value_ckpt, heldout, np.arange(lerobot.LeRobotDataset.open(heldout).num_episodes))


def value_grades(config: ExperimentConfig, value_ckpt: pathlib.Path, merged: pathlib.Path) -> dict[str, Any]:
    """`grade_values` on the `value_split` held-out episodes of the dataset the value model trained on and labels
    (the iteration's merged data): what it labels includes the learned policy's own rollouts, which the fixed
    held-out set (the mediocre scripted policy's) never shows it."""
    from openpi.datasets import lerobot

    _, heldout = value_split(config, lerobot.LeRobotDataset.open(merged).num_episodes)
    return _graded_value(config, value_ckpt, merged, heldout)


def grade_values(*, values: np.ndarray, loss: np.ndarray, target: np.ndarray, progress: np.ndarray,
                 success: np.ndarray, episode_ends: list[int], heldout: np.ndarray,
                 steps_before_end: int = STEPS_BEFORE_END) -> dict[str, Any]:  # fmt: skip
    """How well a value model ranks what it labels, on per-frame arrays (episodes back to back, each ending before
    its `episode_ends`; `heldout` per episode; `values` needed on held-out frames, `loss` NaN where not read):

    - `spearman_vs_return`: rank correlation with the true return (`value_label`) over the held-out frames;
    - `mean_episode_spearman_vs_neg_steps_to_go`: inside each held-out episode, rank correlation with minus the steps
      to go (1 on the last frame), averaged over episodes: does the value rise as the episode moves on, whatever the
      episode's level (pooled frames mostly measure that level);
    - `success_auc_<steps_before_end>_before_end`: ROC AUC of the value `steps_before_end` steps before the last
      frame (the first frame of shorter episodes) for success against failure: is the outcome foreseen;
    - each also for the env's own progress (`progress_...`) on the same frames: the ceiling for a model that reads
      the scene perfectly but cannot foresee the operator or the policy's hesitations;
    - `loss_trained` / `loss_heldout`: the training loss on trained and held-out frames (overfitting shows as a gap).
    """
    from openpi.training import value_train

    heldout = np.asarray(heldout, bool)
    bounds = list(zip([0, *episode_ends[:-1]], episode_ends, strict=True))
    held = [b for b, h in zip(bounds, heldout, strict=True) if h]
    in_heldout = np.zeros(len(target), bool)
    steps_to_go = np.zeros(len(target))
    for start, stop in bounds:
        steps_to_go[start:stop] = np.arange(stop - start, 0, -1)
    for start, stop in held:
        in_heldout[start:stop] = True
    late = np.array([max(start, stop - 1 - steps_before_end) for start, stop in held], np.int64)
    ended_well = np.array([success[stop - 1] for _, stop in held], bool)

    def finite_mean(xs) -> float | None:
        xs = np.asarray(list(xs), np.float64)
        xs = xs[np.isfinite(xs)]  # an episode too short or too flat to rank; a frame whose loss was not read
        return float(xs.mean()) if xs.size else None

    out: dict[str, Any] = {"episodes": len(held), "frames": int(in_heldout.sum())}
    for prefix, score in (("", np.asarray(values, np.float64)), ("progress_", np.asarray(progress, np.float64))):
        out[f"{prefix}spearman_vs_return"] = value_train.spearman(score[in_heldout], target[in_heldout])
        out[f"{prefix}mean_episode_spearman_vs_neg_steps_to_go"] = finite_mean(
            value_train.spearman(score[start:stop], -steps_to_go[start:stop]) for start, stop in held
        )
        out[f"{prefix}success_auc_{steps_before_end}_before_end"] = _metrics.concordance_auc(score[late], ended_well)
    loss = np.asarray(loss, np.float64)
    out["loss_trained"] = finite_mean(loss[~in_heldout])
    out["loss_heldout"] = finite_mean(loss[in_heldout])
    return out


# ------------------------------------------------------------------------------------------------ evaluation


@contextlib.contextmanager
def serve(trained: Trained, *, cfg_beta: float | None = None):
    """The checkpoint served by the project's websocket server on 127.0.0.1 (a free port), as a context."""
    from openpi.policies import policy_config
    from openpi.serving import websocket_policy_server

    # Noise per observation: a rerun repeats every episode whatever the order of the parallel clients' requests.
    policy = policy_config.create_trained_policy(
        trained.config, trained.step_dir, cfg_beta=cfg_beta, noise_per_observation=True
    )
    server = websocket_policy_server.WebsocketPolicyServer(policy, host="127.0.0.1", port=0, metadata=policy.metadata)
    with server.start_in_thread() as running:
        yield running.port


def evaluate_episodes(
    config: ExperimentConfig, envs, port: int, *, adv_ind: str | None, seed: int = EVAL_SEED
) -> list[_metrics.EpisodeResult]:
    """Closed-loop episodes on the evaluation seeds (task i: seed + 10,000 i + k), through the websocket client."""
    jobs = [(task, s) for i, task in enumerate(envs) for s in _seeds(seed, i, config.budget.eval_per_task)]
    episodes = _served_episodes(config, port, jobs, operator=False, adv_ind=adv_ind, label="eval", keep_frames=False)
    return [_rollout.episode_result(ep) for ep in episodes]


def evaluate_summary(config: ExperimentConfig, envs, trained: Trained, *, adv_ind: str | None,
                     cfg_beta: float | None = None, seed: int = EVAL_SEED) -> dict[str, Any]:  # fmt: skip
    """`trained` served and evaluated closed-loop: success per task and overall, and every episode's record (every
    arm on the same seeds, every episode kept, so intervals recompute and arms pair up)."""
    with serve(trained, cfg_beta=cfg_beta) as port:
        episodes = evaluate_episodes(config, envs, port, adv_ind=adv_ind, seed=seed)
    return {**_metrics.summarize(episodes), "episodes": [dataclasses.asdict(e) for e in episodes]}


# ------------------------------------------------------------------------------------------------ the experiment


def prepare_run_dir(out: pathlib.Path) -> None:
    """Creates `out`, installs the toy tokenizers under its own data home and turns on the compilation cache."""
    import jax

    from openpi.shared import testing

    out.mkdir(parents=True, exist_ok=True)
    # The real tokenizers cannot be downloaded: tiny real ones at their real places under the run's own data home.
    data_home = out / "openpi_data_home"
    os.environ["OPENPI_DATA_HOME"] = str(data_home)
    testing.install_toy_tokenizers(data_home)
    # Arms share shapes (BC and filtered BC, every RECAP iteration, every value model): compile each once, as
    # scripts/train.py does across runs; JAX_COMPILATION_CACHE_DIR overrides the place.
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(pathlib.Path("~/.cache/jax").expanduser()))


@dataclasses.dataclass(frozen=True)
class InitialData:
    """Iteration 0 as written under `<out>/data`: its episodes, the dataset of all of them, the filtered-BC
    selection, and the held-out episodes the value model is scored on."""

    episodes: list[_rollout.Episode]
    data: pathlib.Path
    filtered: pathlib.Path
    heldout: pathlib.Path


def collect_initial(config: ExperimentConfig, envs: dict[str, Any]) -> InitialData:
    """Expert demonstrations + the mediocre policy's corrected rollouts (+ held-out episodes), written once."""
    budget, data = config.budget, config.out_dir / "data"
    image_size = config.image_size if next(iter(envs.values())).cameras else None
    demos = collect_expert(envs, block=0, per_task=budget.demos_per_task, quality=1.0, human=True,
                           operator=False, seed=config.seed)  # fmt: skip
    rollouts = collect_expert(envs, block=COLLECT_SEED_BLOCK, per_task=budget.autonomous_per_task,
                              quality=config.mediocre_quality, human=False, operator=True, seed=config.seed + 100)  # fmt: skip
    # Held-out episodes come from the same process as the training data (the mediocre policy, corrected): the value
    # model estimates that process's return. Without the operator half of them end on a wrong button that nothing in
    # the first frames foretells, and even the env's own progress ranks their returns at only ~0.3-0.5.
    heldout = collect_expert(envs, block=HELDOUT_SEED, per_task=budget.heldout_per_task,
                             quality=config.mediocre_quality, human=False, operator=True, seed=config.seed + 200)  # fmt: skip
    episodes = demos + rollouts
    return InitialData(
        episodes=episodes,
        data=write_episodes(data / "it0", episodes, envs, image_size),
        filtered=write_episodes(data / "it0_filtered", filtered_for_bc(episodes), envs, image_size),
        heldout=write_episodes(data / "heldout", heldout, envs, image_size),
    )


# The same RECAP checkpoint served with the other indicators (first and last iteration): if `positive` does not
# beat them, the gain over BC comes from somewhere other than the advantage conditioning.
INDICATOR_ABLATION = (vocab.NONE, vocab.NEGATIVE)


def run(config: ExperimentConfig) -> dict[str, Any]:
    """Runs the whole experiment under `config.out_dir`; returns (and writes) the results."""

    budget = config.budget
    out = config.out_dir
    prepare_run_dir(out)
    clock = _Clock()
    envs = make_envs(config)
    first = next(iter(envs.values()))
    image_size = config.image_size if first.cameras else None
    data = out / "data"
    seeds = config.policy_seeds
    results: dict[str, Any] = {"budget": dataclasses.asdict(budget), "env": config.env, "tasks": list(envs),
                               "seed": config.seed, "train_seeds": list(seeds), "arms": {}, "labels": {},
                               "control_labels": {}, "value": {}, "data": {}}  # fmt: skip
    start = time.monotonic()

    with clock.stage("collect initial data"):
        initial = collect_initial(config, envs)
        all_episodes, it0, filtered, heldout_root = initial.episodes, initial.data, initial.filtered, initial.heldout
        results["data"]["it0"] = _episode_stats(all_episodes)

    def train_arms(arms: list[tuple[str, str, pathlib.Path, int]]) -> dict[tuple[str, int], Trained]:
        """(name, config name, data, seed) -> trained, all trained at once on the budget's schedule."""
        names = [f"{name}{seed_tag(seeds, seed)}" for name, _, _, seed in arms]
        with clock.stage(f"train {', '.join(names)}"):
            trained = train_policies(config, [(n, c, root, {"seed": seed}) for n, (_, c, root, seed) in
                                              zip(names, arms, strict=True)])  # fmt: skip
        return {(name, seed): t for (name, _, _, seed), t in zip(arms, trained, strict=True)}

    def evaluate_arm(arm: str, iteration: int, trained: Trained, seed: int, *, adv_ind=None, cfg_beta=None):
        with clock.stage(f"evaluate {arm}{seed_tag(seeds, seed)} (iteration {iteration})"):
            summary = evaluate_summary(config, envs, trained, adv_ind=adv_ind, cfg_beta=cfg_beta)
        arms = seed_arms(results, seeds, seed)
        arms.setdefault(arm, {})[str(iteration)] = summary
        overall = summary["overall"]
        logger.info("%s%s it%d: success %.3f %s", arm, seed_tag(seeds, seed), iteration, overall["success_rate"],
                    overall["ci95"])  # fmt: skip

    baselines = train_arms([(arm, config.bc_config, root, seed) for seed in seeds
                            for arm, root in (("bc", it0), ("filtered_bc", filtered))])  # fmt: skip
    for seed in seeds:
        evaluate_arm("bc", 1, baselines["bc", seed], seed)
        evaluate_arm("filtered_bc", 1, baselines["filtered_bc", seed], seed)

    merged_episodes = list(all_episodes)
    merged = it0
    recap: Trained | None = None  # the first seed's latest RECAP policy, served to collect the next iteration's data
    for iteration in range(1, budget.iterations + 1):
        if iteration > 1:
            with clock.stage(f"collect iteration {iteration}"), serve(recap) as port:
                new = collect_policy(config, envs, port, block=COLLECT_SEED_BLOCK * iteration)
            results["data"][f"it{iteration - 1}_collected"] = _episode_stats(new)
            merged_episodes += new
            merged = write_episodes(data / f"merged_it{iteration}", merged_episodes, envs, image_size)
        with clock.stage(f"value model (iteration {iteration})"):
            value_ckpt = train_value(config, f"it{iteration}", merged)
            results["value"][str(iteration)] = {"fixed_heldout": value_spearman(config, value_ckpt, heldout_root),
                                                "merged_heldout": value_grades(config, value_ckpt, merged)}  # fmt: skip
        with clock.stage(f"relabel (iteration {iteration})"):
            relabelled = data / f"relabelled_it{iteration}"
            relabel(config, value_ckpt, merged, relabelled)
            truth = iteration_truth(envs, relabelled, iteration)
            results["labels"][str(iteration)] = label_diagnostics(relabelled, budget.lookahead, truth)
        controls: dict[str, pathlib.Path] = {}
        if iteration in (1, budget.iterations):
            with clock.stage(f"control labels (iteration {iteration})"):
                controls = write_controls(config, relabelled, truth, iteration)
                results["control_labels"][str(iteration)] = {
                    arm: label_diagnostics(root, budget.lookahead, truth) for arm, root in controls.items()
                }
        last = iteration == budget.iterations > 1
        arms = [(f"recap_it{iteration}", config.policy_config, relabelled, seed) for seed in seeds]
        arms += [(f"{arm}_it{iteration}", config.policy_config, root, seed) for seed in seeds
                 for arm, root in controls.items()]  # fmt: skip
        # The control the later iterations need: they train on more data (the policy's own corrected rollouts) than
        # BC did, so "the last iteration beats BC" mixes RECAP with more data. BC on exactly this data separates them.
        arms += [(f"bc_it{iteration}", config.bc_config, merged, seed) for seed in seeds if last]
        trained_now = train_arms(arms)
        for seed in seeds:
            trained = trained_now[f"recap_it{iteration}", seed]
            recap = trained if seed == seeds[0] else recap
            evaluate_arm("recap", iteration, trained, seed, adv_ind=vocab.POSITIVE)
            if iteration == 1:
                for beta in budget.cfg_betas:
                    evaluate_arm(f"recap_cfg{beta}", 1, trained, seed, adv_ind=vocab.POSITIVE, cfg_beta=beta)
            if iteration in (1, budget.iterations):
                for indicator in INDICATOR_ABLATION:
                    evaluate_arm(f"recap_{indicator}", iteration, trained, seed, adv_ind=indicator)
            for arm in controls:
                evaluate_arm(arm, iteration, trained_now[f"{arm}_it{iteration}", seed], seed, adv_ind=vocab.POSITIVE)
            if last:
                evaluate_arm("bc_same_data", iteration, trained_now[f"bc_it{iteration}", seed], seed)

    compare_arms(results)
    results["stages_s"] = clock.stages
    results["total_s"] = round(time.monotonic() - start, 1)
    write_outputs(out, results)
    return results


def _episode_stats(episodes: list[_rollout.Episode]) -> dict[str, Any]:
    return {
        "episodes": len(episodes),
        "frames": int(sum(ep.length for ep in episodes)),
        "success_rate": float(np.mean([ep.success for ep in episodes])),
        "human_frame_fraction": float(
            sum(ep.human_steps for ep in episodes) / max(1, sum(ep.length for ep in episodes))
        ),
        "clean_frame_fraction": float(
            sum(sum(ep.clean) for ep in episodes) / max(1, sum(ep.length for ep in episodes))
        ),
    }


def paired_comparisons(arms: dict[str, Any]) -> dict[str, Any]:
    """Exact McNemar tests between the arms of one training seed, evaluated on the same seeds: each RECAP iteration
    against BC, the first and the last against filtered BC, the last against the first and against BC on the same
    data, each CFG arm against plain RECAP, RECAP served with `positive` against the same checkpoint served with
    `none` / `negative`, and RECAP against its controls (`ORACLE`, `SHUFFLED`) on the same data. Computed from the
    per-episode records stored in `arms`, so anyone can recompute them from the JSON."""

    def episodes(arm: str, iteration: int):
        records = arms[arm][str(iteration)]["episodes"]
        return [_metrics.EpisodeResult(**r) for r in records]

    last = max(int(i) for i in arms["recap"])
    pairs = [(("recap", i), ("bc", 1)) for i in sorted(int(i) for i in arms["recap"])]
    pairs += [(("recap", i), ("filtered_bc", 1)) for i in sorted({1, last})]
    if last > 1:
        pairs.append((("recap", last), ("recap", 1)))
    if str(last) in arms.get("bc_same_data", {}):
        pairs.append((("recap", last), ("bc_same_data", last)))
    pairs += [((arm, 1), ("recap", 1)) for arm in arms if arm.startswith("recap_cfg")]
    pairs += [(("recap", int(i)), (f"recap_{ind}", int(i))) for ind in INDICATOR_ABLATION
              for i in arms.get(f"recap_{ind}", {})]  # fmt: skip
    pairs += [(("recap", int(i)), (control, int(i))) for control in (SHUFFLED, ORACLE) for i in arms.get(control, {})]
    return {
        f"{a}_it{ia} vs {b}_it{ib}": _metrics.paired_comparison(episodes(a, ia), episodes(b, ib))
        for (a, ia), (b, ib) in pairs
    }


def seed_tag(seeds: tuple[int, ...], seed: int) -> str:
    """The suffix of a training seed's arm and checkpoint names: none for the first seed, `_seed<n>` for the others."""
    return "" if seed == seeds[0] else f"_seed{seed}"


def seed_arms(results: dict[str, Any], seeds: tuple[int, ...], seed: int) -> dict[str, Any]:
    """Where a training seed's arms live in `results`: `arms` for the first seed, `seed_arms[<seed>]` for the others."""
    return results["arms"] if seed == seeds[0] else results.setdefault("seed_arms", {}).setdefault(str(seed), {})


def arms_by_seed(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every training seed's arms, first seed first: its arms are `results["arms"]` (as in a run with one seed), the
    other seeds' are under `results["seed_arms"]`."""
    seeds = results.get("train_seeds") or [results["seed"]]
    return {str(seeds[0]): results["arms"], **results.get("seed_arms", {})}


def compare_arms(results: dict[str, Any]) -> None:
    """Sets the paired tests of every training seed (`paired`: the first seed's, `seed_paired`: the others') and, with
    several seeds, one test per pair over all of them (`combined`: `metrics.combined_paired_comparison`)."""
    by_seed = {seed: paired_comparisons(arms) for seed, arms in arms_by_seed(results).items()}
    first, *others = by_seed
    results["paired"] = by_seed[first]
    if others:
        results["seed_paired"] = {seed: by_seed[seed] for seed in others}
        results["combined"] = {
            name: _metrics.combined_paired_comparison([paired[name] for paired in by_seed.values()])
            for name in by_seed[first]
            if all(name in paired for paired in by_seed.values())
        }


def table(results: dict[str, Any]) -> str:
    """One row per arm, iteration and training seed: success with its Wilson 95 % interval, mean steps to success;
    then the first seed's paired tests and, with several seeds, the combined tests with each seed's difference."""
    rows = [f"{'arm':<16} {'iter':>4} {'seed':>4} {'episodes':>8} {'success':>8} {'95% CI':>15} {'steps':>6}"]
    rows.append("-" * len(rows[0]))
    for seed, arms in arms_by_seed(results).items():
        for arm, by_iter in arms.items():
            for iteration, summary in by_iter.items():
                o = summary["overall"]
                low, high = o["ci95"]
                ci = f"[{low:.3f}, {high:.3f}]"
                steps = "-" if o["mean_steps_to_success"] is None else f"{o['mean_steps_to_success']:.1f}"
                rows.append(f"{arm:<16} {iteration:>4} {seed:>4} {o['episodes']:>8} {o['success_rate']:>8.3f} "
                            f"{ci:>15} {steps:>6}")  # fmt: skip
    if results.get("paired"):
        rows += ["", f"{'paired (same seeds)':<36} {'a only':>6} {'b only':>6} {'diff':>7} {'McNemar p':>9}"]
        for name, p in results["paired"].items():
            rows.append(f"{name:<36} {p['a_only']:>6} {p['b_only']:>6} {p['difference']:>+7.3f} {p['p_value']:>9.3g}")
    if results.get("combined"):
        seeds = ", ".join(arms_by_seed(results))
        rows += ["", f"{'combined over training seeds':<36} {'a only':>6} {'b only':>6} {'diff':>7} {'exact p':>9}  "
                     f"diff per seed ({seeds})"]  # fmt: skip
        for name, p in results["combined"].items():
            per_seed = " ".join(f"{d:+.3f}" for d in p["differences"])
            rows.append(f"{name:<36} {p['a_only']:>6} {p['b_only']:>6} {p['difference']:>+7.3f} "
                        f"{p['p_value']:>9.3g}  {per_seed}")  # fmt: skip
    return "\n".join(rows)


def write_outputs(out: pathlib.Path, results: dict[str, Any]) -> None:
    from openpi.shared import atomic

    atomic.write_text(out / "results.json", json.dumps(results, indent=2, default=_jsonable))
    series: dict[str, list] = {}
    for arms in arms_by_seed(results).values():  # every seed's point (plot_success joins their means)
        for arm, by_iter in arms.items():
            series.setdefault(arm, []).extend((int(it), summary) for it, summary in by_iter.items())
    title = f"RECAP in simulation ({results['env']}: {', '.join(results['tasks'])})"
    _metrics.plot_success(series, out / "success_vs_iteration.png", title)
    (out / "table.txt").write_text(table(results) + "\n")


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, pathlib.Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")


def read_results(run_dir: pathlib.Path) -> dict[str, Any]:
    """The `results.json` of a finished run, or a one-sentence error naming what to pass instead."""
    from openpi.shared import errors

    path = run_dir / "results.json"
    if not path.is_file():
        raise errors.ConfigError(f"No results.json in {run_dir}; pass the output directory of a recap_sim_bench run.")
    return json.loads(path.read_text())


def add_indicator_ablation(run_dir: pathlib.Path) -> dict[str, Any]:
    """Brings a run made before the indicator ablation and the label grades up to date, without retraining.

    Serves the run's RECAP checkpoints of the first and the last iteration with `INDICATOR_ABLATION` on the run's
    evaluation seeds (training is deterministic, so these are the checkpoints the run evaluated), grades every
    iteration's labels again, recomputes the paired tests and rewrites the run's outputs; returns the results."""
    results = read_results(run_dir)
    config = config_from_results(run_dir, results)
    prepare_run_dir(run_dir)
    envs = make_envs(config)
    iterations = sorted(int(i) for i in results["arms"]["recap"])
    for iteration in iterations:
        relabelled = run_dir / "data" / f"relabelled_it{iteration}"
        truth = action_truth(envs, relabelled)
        results["labels"][str(iteration)] = label_diagnostics(relabelled, config.budget.lookahead, truth)
        if iteration not in (iterations[0], iterations[-1]):
            continue
        trained = trained_arm(config, f"recap_it{iteration}", config.policy_config, relabelled)
        for indicator in INDICATOR_ABLATION:
            summary = evaluate_summary(config, envs, trained, adv_ind=indicator)
            results["arms"].setdefault(f"recap_{indicator}", {})[str(iteration)] = summary
    compare_arms(results)
    write_outputs(run_dir, results)
    return results


def add_label_oracle(run_dir: pathlib.Path) -> dict[str, Any]:
    """Adds the oracle control of iteration 1 to a finished run made without it (MetaWorld runs before
    `clean_truth`), as the run itself would have: the truth of its iteration-1 data, the oracle labels at the
    relabeller's positive share, one RECAP policy per training seed trained on them and served with `positive` on the
    run's evaluation seeds; the labels graded against the truth, the paired tests recomputed, the outputs rewritten."""
    results = read_results(run_dir)
    config = config_from_results(run_dir, results)
    prepare_run_dir(run_dir)
    envs = make_envs(config)
    relabelled = run_dir / "data" / "relabelled_it1"
    truth = iteration_truth(envs, relabelled, 1)
    if truth is None:
        raise errors.ConfigError(f"The simulator has no truth for {relabelled}; there is no oracle to add.")
    results["labels"]["1"] = label_diagnostics(relabelled, config.budget.lookahead, truth)
    root = write_controls(config, relabelled, truth, 1, arms=(ORACLE,))[ORACLE]
    results["control_labels"].setdefault("1", {})[ORACLE] = label_diagnostics(root, config.budget.lookahead, truth)
    seeds = config.policy_seeds
    arms = [(f"{ORACLE}_it1{seed_tag(seeds, s)}", config.policy_config, root, {"seed": s}) for s in seeds]
    trained = train_policies(config, arms)
    for seed, arm in zip(seeds, trained, strict=True):
        summary = evaluate_summary(config, envs, arm, adv_ind=vocab.POSITIVE)
        seed_arms(results, seeds, seed).setdefault(ORACLE, {})["1"] = summary
    compare_arms(results)
    write_outputs(run_dir, results)
    return results


def config_from_results(run_dir: pathlib.Path, results: dict[str, Any]) -> ExperimentConfig:
    """The settings a finished run (its `results.json`) was made with, pointing at its own directory."""
    budget = dataclasses.replace(Budget(**results["budget"]), cfg_betas=tuple(results["budget"]["cfg_betas"]))
    config = config_for_env(results["env"], run_dir, budget, results["seed"])
    return dataclasses.replace(config, tasks=tuple(results["tasks"]), train_seeds=tuple(results.get("train_seeds", ())))


def clean_outputs(out: pathlib.Path) -> None:
    """Removes an earlier run's directory (the experiment always starts from scratch)."""
    if out.exists():
        shutil.rmtree(out)


def fresh_config(
    env: str,
    out: pathlib.Path,
    budget: str,
    seed: int,
    tasks: tuple[str, ...] | None,
    train_seeds: tuple[int, ...] = (),
) -> ExperimentConfig:
    """The settings of a run in `out` (emptied first) from a benchmark's flags: env, budget name, seed, task subset,
    policy training seeds."""
    out = out.expanduser().absolute()
    clean_outputs(out)
    config = dataclasses.replace(config_for_env(env, out, BUDGETS[budget], seed), train_seeds=tuple(train_seeds))
    return dataclasses.replace(config, tasks=tasks) if tasks else config
