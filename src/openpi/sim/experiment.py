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

Every evaluation is closed-loop against a served policy (`openpi.serving` over 127.0.0.1 + `openpi_client`), on
evaluation seeds disjoint from every training seed. Training is deterministic and the servers draw their noise per
observation, so the same seed and budget repeat every episode of every arm. The same RECAP checkpoint is also served
with `none` and `negative` (first and last iteration): the indicator ablation. The simulator grades the labels
(`label_diagnostics`: clean share, operator takeovers ahead, progress, phase of positives vs negatives) and the
value model (Spearman correlation with the true return on held-out episodes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import shutil
import time
from typing import Any

import numpy as np

from openpi.recap import vocab
from openpi.shared import progress as _progress
from openpi.sim import base as _base
from openpi.sim import dataset as _dataset
from openpi.sim import expert as _expert
from openpi.sim import metrics as _metrics
from openpi.sim import operator as _operator
from openpi.sim import registry as _registry
from openpi.sim import rollout as _rollout

logger = logging.getLogger(__name__)

ROOT = pathlib.Path(__file__).resolve().parents[3]
# Seed ranges: collection seeds count up from 0 per iteration block; evaluation and held-out seeds never overlap them.
COLLECT_SEED_BLOCK = 100_000
HELDOUT_SEED = 500_000
EVAL_SEED = 1_000_000


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


# The toy policy passes the learnability gate on one tabletop task (98.5 % from clean demonstrations) but not on
# three (9.5 %: it does not bind the colour word to a button), and an experiment on a policy that fails the gate
# measures nothing. `--tasks press_red press_green press_blue` runs the three-prompt version.
TABLETOP_TASKS = ("press_red",)


def config_for_env(env: str, out_dir: pathlib.Path, budget: Budget, seed: int = 0) -> ExperimentConfig:
    """The experiment's settings per env: configs, tasks, and a first policy that is mediocre in that env.

    MetaWorld's expert degrades much faster with quality than the tabletop's (quality 0.4 fails almost every
    task), so its mediocre policy is quality 0.7; its tasks are push-v3 plus two others whose expert is reliable.
    """
    if env == "tabletop":
        return ExperimentConfig(out_dir=out_dir, env=env, budget=budget, seed=seed, tasks=TABLETOP_TASKS)
    if env == "metaworld":
        return ExperimentConfig(
            out_dir=out_dir,
            env=env,
            budget=budget,
            seed=seed,
            tasks=("push-v3", "reach-v3", "drawer-close-v3"),
            policy_config="sim_pi06_metaworld",
            bc_config="sim_pi05_metaworld",
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
    steps = sorted((p for p in run_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    if not steps:
        raise FileNotFoundError(f"No checkpoint step in {run_dir}.")
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
    from openpi.training import trainer

    train_config = policy_train_config(config, name, config_name, data_root, overrides)
    trainer.train(train_config, progress=True)
    return Trained(train_config, _latest_step(train_config.checkpoint_dir))


def trained_arm(config: ExperimentConfig, name: str, config_name: str, data_root: pathlib.Path) -> Trained:
    """An arm a finished run in `config.out_dir` trained: its TrainConfig rebuilt and its last step (nothing is
    retrained; training is deterministic, so this is the checkpoint the run evaluated)."""
    train_config = policy_train_config(config, name, config_name, data_root)
    return Trained(train_config, _latest_step(train_config.checkpoint_dir))


def train_value(
    config: ExperimentConfig, name: str, data_root: pathlib.Path, overrides: dict[str, Any] | None = None
) -> pathlib.Path:
    """The value model of `config.value_config` on `data_root`; `overrides`: ValueTrainConfig fields (e.g. model)."""
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
    (e.g. at several `top_percent`) share `cache_dir`, so the values are inferred once."""
    from openpi.relabel import relabel as _relabel

    return _relabel.relabel(
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


# ------------------------------------------------------------------------------------------------ diagnostics


def label_diagnostics(relabelled: pathlib.Path, lookahead: int = Budget.lookahead) -> dict[str, Any]:
    """How good the labels are among autonomous frames, graded by what only the simulator knows, for positives
    against negatives:

    - the clean share: how often the label sits on a noise-free expert action. Only the scripted mediocre policy
      can act clean; a learned policy's own rollouts (iterations 2+) never do, so there it only grades the
      iteration-0 frames;
    - the takeover share: how often the operator takes over within the next `lookahead` frames (it does when
      progress stalls or a wrong button is near), for any policy's frames;
    - the progress gain: the env's own progress (`sim.progress`) the frame's action made up to the next frame;
    - the steps left to the episode's end: a value model that regresses to the mean gives late frames high
      advantages, so positives that sit late say that the labels encode the phase of the episode.
    """
    from openpi.datasets import lerobot

    ds = lerobot.LeRobotDataset.open(relabelled)
    return grade_labels(
        labels=np.asarray(ds.column(vocab.ADV_IND)).reshape(-1),
        human=np.asarray(ds.column(vocab.INTERVENTION)).reshape(-1) == 1,
        clean=np.asarray(ds.column(_dataset.CLEAN_ACTION)).reshape(-1) == 1,
        progress=np.asarray(ds.column(_dataset.PROGRESS), np.float64).reshape(-1),
        episode_ends=[ep.to_index for ep in ds.episodes],
        lookahead=lookahead,
    )


def grade_labels(*, labels: np.ndarray, human: np.ndarray, clean: np.ndarray, progress: np.ndarray,
                 episode_ends: list[int], lookahead: int) -> dict[str, Any]:  # fmt: skip
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

    return {
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


def value_spearman(config: ExperimentConfig, value_ckpt: pathlib.Path, heldout: pathlib.Path) -> dict[str, Any]:
    """Spearman of the value model's predictions against the true return (`value_label`) on held-out episodes,
    and against -(steps to go) on the successful ones; with the same Spearman for the env's `progress`, the
    reference a value model that sees is measured against."""
    from openpi.datasets import lerobot
    from openpi.relabel import relabel as _relabel
    from openpi.training import value_train

    ds = lerobot.LeRobotDataset.open(heldout)
    cfg = _relabel.RelabelConfig(data_dir=str(heldout), checkpoint_dir=str(value_ckpt), output_dir=str(heldout) + "_x")
    factory, values_fn, key = _relabel.load_model(cfg, ds)
    cols = _relabel.read_columns(ds)
    frames = np.arange(ds.num_frames)
    # The key hashes the checkpoint, not the episodes: one cache per (held-out set, checkpoint).
    cache = _relabel.ValueCache(config.out_dir / "cache" / f"{heldout.name}_{value_ckpt.name}", key)
    values, _ = _relabel.infer_values(
        factory, values_fn, cols, frames, cache, batch_size=config.budget.batch_size, progress=False
    )
    target = np.asarray(ds.column("value_label"), np.float32).reshape(-1)
    success = np.asarray(ds.column(_dataset.SUCCESS)).reshape(-1)
    steps_to_go, in_success = np.zeros(ds.num_frames), np.zeros(ds.num_frames, bool)
    for start, stop in cols.bounds:
        steps_to_go[start:stop] = np.arange(stop - start, 0, -1)
        in_success[start:stop] = success[stop - 1] == 1
    progress = np.asarray(ds.column(_dataset.PROGRESS), np.float32).reshape(-1)
    out = {
        "frames": int(ds.num_frames),
        "spearman_vs_return": value_train.spearman(values, target),
        # The ceiling of the first number for a model that reads the scene perfectly but cannot foresee the
        # operator or the policy's hesitations: the env's own progress measure (minus the distance to the goal).
        "progress_spearman_vs_return": value_train.spearman(progress, target),
    }
    if in_success.sum() > 2:
        out["spearman_vs_neg_steps_to_go_successes"] = value_train.spearman(
            values[in_success], -steps_to_go[in_success]
        )
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
    results: dict[str, Any] = {"budget": dataclasses.asdict(budget), "env": config.env, "tasks": list(envs),
                               "seed": config.seed, "arms": {}, "labels": {}, "value": {}, "data": {}}  # fmt: skip
    start = time.monotonic()

    with clock.stage("collect initial data"):
        initial = collect_initial(config, envs)
        all_episodes, it0, filtered, heldout_root = initial.episodes, initial.data, initial.filtered, initial.heldout
        results["data"]["it0"] = _episode_stats(all_episodes)

    def evaluate_arm(arm: str, iteration: int, trained: Trained, *, adv_ind=None, cfg_beta=None):
        with clock.stage(f"evaluate {arm} (iteration {iteration})"):
            summary = evaluate_summary(config, envs, trained, adv_ind=adv_ind, cfg_beta=cfg_beta)
        results["arms"].setdefault(arm, {})[str(iteration)] = summary
        overall = summary["overall"]
        logger.info("%s it%d: success %.3f %s", arm, iteration, overall["success_rate"], overall["ci95"])

    with clock.stage("train bc"):
        bc = train_policy(config, "bc", config.bc_config, it0)
    evaluate_arm("bc", 1, bc)
    with clock.stage("train filtered_bc"):
        fbc = train_policy(config, "filtered_bc", config.bc_config, filtered)
    evaluate_arm("filtered_bc", 1, fbc)

    merged_episodes = list(all_episodes)
    merged = it0
    recap: Trained | None = None  # the latest RECAP policy, served to collect the next iteration's rollouts
    for iteration in range(1, budget.iterations + 1):
        if iteration > 1:
            with clock.stage(f"collect iteration {iteration}"), serve(recap) as port:
                new = collect_policy(config, envs, port, block=COLLECT_SEED_BLOCK * iteration)
            results["data"][f"it{iteration - 1}_collected"] = _episode_stats(new)
            merged_episodes += new
            merged = write_episodes(data / f"merged_it{iteration}", merged_episodes, envs, image_size)
        with clock.stage(f"value model (iteration {iteration})"):
            value_ckpt = train_value(config, f"it{iteration}", merged)
            results["value"][str(iteration)] = value_spearman(config, value_ckpt, heldout_root)
        with clock.stage(f"relabel (iteration {iteration})"):
            relabelled = data / f"relabelled_it{iteration}"
            relabel(config, value_ckpt, merged, relabelled)
            results["labels"][str(iteration)] = label_diagnostics(relabelled, budget.lookahead)
        with clock.stage(f"train recap (iteration {iteration})"):
            recap = train_policy(config, f"recap_it{iteration}", config.policy_config, relabelled)
        evaluate_arm("recap", iteration, recap, adv_ind=vocab.POSITIVE)
        if iteration == 1:
            for beta in budget.cfg_betas:
                evaluate_arm(f"recap_cfg{beta}", 1, recap, adv_ind=vocab.POSITIVE, cfg_beta=beta)
        if iteration in (1, budget.iterations):
            for indicator in INDICATOR_ABLATION:
                evaluate_arm(f"recap_{indicator}", iteration, recap, adv_ind=indicator)
        if iteration == budget.iterations > 1:
            # The control the later iterations need: they train on more data (the policy's own corrected rollouts)
            # than BC did, so "the last iteration beats BC" mixes RECAP with more data. BC on exactly this data
            # separates the two.
            with clock.stage(f"train bc on iteration {iteration}'s data"):
                same = train_policy(config, f"bc_it{iteration}", config.bc_config, merged)
            evaluate_arm("bc_same_data", iteration, same)

    results["paired"] = paired_comparisons(results)
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


def paired_comparisons(results: dict[str, Any]) -> dict[str, Any]:
    """Exact McNemar tests between arms evaluated on the same seeds: each RECAP iteration against BC, the first and
    the last against filtered BC, the last against the first and against BC on the same data, each CFG arm against
    plain RECAP, and RECAP served with `positive` against the same checkpoint served with `none` / `negative`.
    Computed from the per-episode records stored in `results`, so anyone can recompute them from the JSON."""

    def episodes(arm: str, iteration: int):
        records = results["arms"][arm][str(iteration)]["episodes"]
        return [_metrics.EpisodeResult(**r) for r in records]

    arms = results["arms"]
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
    return {
        f"{a}_it{ia} vs {b}_it{ib}": _metrics.paired_comparison(episodes(a, ia), episodes(b, ib))
        for (a, ia), (b, ib) in pairs
    }


def table(results: dict[str, Any]) -> str:
    """One row per arm and iteration: success with its Wilson 95 % interval, mean steps to success."""
    rows = [f"{'arm':<16} {'iter':>4} {'episodes':>8} {'success':>8} {'95% CI':>15} {'steps':>6}"]
    rows.append("-" * len(rows[0]))
    for arm, by_iter in results["arms"].items():
        for iteration, summary in by_iter.items():
            o = summary["overall"]
            low, high = o["ci95"]
            ci = f"[{low:.3f}, {high:.3f}]"
            steps = "-" if o["mean_steps_to_success"] is None else f"{o['mean_steps_to_success']:.1f}"
            rows.append(f"{arm:<16} {iteration:>4} {o['episodes']:>8} {o['success_rate']:>8.3f} {ci:>15} {steps:>6}")
    if results.get("paired"):
        rows += ["", f"{'paired (same seeds)':<32} {'a only':>6} {'b only':>6} {'diff':>7} {'McNemar p':>9}"]
        for name, p in results["paired"].items():
            rows.append(f"{name:<32} {p['a_only']:>6} {p['b_only']:>6} {p['difference']:>+7.3f} {p['p_value']:>9.3g}")
    return "\n".join(rows)


def write_outputs(out: pathlib.Path, results: dict[str, Any]) -> None:
    from openpi.shared import atomic

    atomic.write_text(out / "results.json", json.dumps(results, indent=2, default=_jsonable))
    series = {
        arm: [(int(it), summary) for it, summary in sorted(by_iter.items(), key=lambda kv: int(kv[0]))]
        for arm, by_iter in results["arms"].items()
    }
    _metrics.plot_success(series, out / "success_vs_iteration.png", f"RECAP in simulation ({results['env']})")
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
        results["labels"][str(iteration)] = label_diagnostics(relabelled, config.budget.lookahead)
        if iteration not in (iterations[0], iterations[-1]):
            continue
        trained = trained_arm(config, f"recap_it{iteration}", config.policy_config, relabelled)
        for indicator in INDICATOR_ABLATION:
            summary = evaluate_summary(config, envs, trained, adv_ind=indicator)
            results["arms"].setdefault(f"recap_{indicator}", {})[str(iteration)] = summary
    results["paired"] = paired_comparisons(results)
    write_outputs(run_dir, results)
    return results


def config_from_results(run_dir: pathlib.Path, results: dict[str, Any]) -> ExperimentConfig:
    """The settings a finished run (its `results.json`) was made with, pointing at its own directory."""
    budget = dataclasses.replace(Budget(**results["budget"]), cfg_betas=tuple(results["budget"]["cfg_betas"]))
    config = config_for_env(results["env"], run_dir, budget, results["seed"])
    return dataclasses.replace(config, tasks=tuple(results["tasks"]))


def clean_outputs(out: pathlib.Path) -> None:
    """Removes an earlier run's directory (the experiment always starts from scratch)."""
    if out.exists():
        shutil.rmtree(out)


def fresh_config(
    env: str, out: pathlib.Path, budget: str, seed: int, tasks: tuple[str, ...] | None
) -> ExperimentConfig:
    """The settings of a run in `out` (emptied first) from a benchmark's flags: env, budget name, seed, task subset."""
    out = out.expanduser().absolute()
    clean_outputs(out)
    config = config_for_env(env, out, BUDGETS[budget], seed)
    return dataclasses.replace(config, tasks=tasks) if tasks else config
