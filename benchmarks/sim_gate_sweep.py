"""Fast in-process sweep for the learnability gate: which settings let toy BC learn the tabletop tasks?

Used to choose settings on the *validation* seeds (`openpi.sim.gate.VALIDATION_SEED`), never on the evaluation
seeds. It trains the real model with the real train step (`trainer.policy_trainer`) on frames that went through
the config's own transform chain (robot inputs, `Normalize` with the stats `norm_stats` computes, tokenizer,
padding); what it skips to be several times faster than `sim_gate_bench.py` is the LeRobot round trip (frames
are generated and batched in memory) and the websocket (all evaluation episodes step together and share one
batched `sample_actions` per replanning step, every 5 steps as in the served evaluation). It also measures the
first-target error (world units from the first predicted (x, y) to the prompted button), the number the policy
probe reports. Results confirmed here are then run through `sim_gate_bench.py`.

    uv run benchmarks/sim_gate_sweep.py --layouts 600 --steps 1500                     # the sim_pi05 baseline
    uv run benchmarks/sim_gate_sweep.py --tasks press_red --layouts 1800 --steps 1000  # one task: no prompt needed
    uv run benchmarks/sim_gate_sweep.py --model '{"siglip_posemb": "sincos2d"}' --lr 2e-3 --eval-every 800

Appends one JSON line per run to `<out>/sweep.jsonl` and prints a RESULT line.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class Args:
    layouts: int = 600
    """Demonstration layouts (seeds 0..layouts-1), each under every task's prompt."""
    tasks: tuple[str, ...] = ("press_red", "press_green", "press_blue")
    steps: int = 1500
    lr: float = 1e-3
    """Peak learning rate of the config's cosine schedule (warm-up 50 steps, decay to lr / 20)."""
    batch_size: int = 32
    model: str = "{}"
    """Pi0Config overrides as JSON, e.g. '{"siglip_posemb": "sincos2d"}'."""
    gemma: str = "{}"
    """Exploration only: overrides of the 'dummy' Gemma variant's shape (e.g. '{"num_kv_heads": 8}'), patched into
    this process's variant table; no registered config uses such a variant."""
    eval_per_task: int = 33
    eval_every: int = 0
    """Also evaluate every this many steps (0: only at the end)."""
    num_flow_steps: int = 10
    replan_steps: int = 5
    warm_layouts: int = 0
    """Curriculum lever: for the first `warm_steps` steps, sample only the frames of the first this many layouts
    (so that reading the colour word pays off before binding it to the image does)."""
    warm_steps: int = 0
    tag: str = "run"
    out: pathlib.Path = pathlib.Path("./sim_output/sim_gate_sweep")


def _frames(episodes, horizon: int) -> list[dict]:
    """Every frame of `episodes` with its action chunk (past the episode's end the last action repeats, as in
    `LeRobotDataset.action_chunk`)."""
    frames = []
    for ep in episodes:
        actions = np.stack(ep.actions)
        for t in range(ep.length):
            chunk = actions[np.minimum(np.arange(t, t + horizon), ep.length - 1)]
            images = {camera: frames_[t] for camera, frames_ in ep.images.items()}
            frames.append({"images": images, "state": ep.states[t], "actions": chunk, "prompt": ep.prompt,
                           "seed": ep.seed})  # fmt: skip
    return frames


def main(args: Args) -> dict:
    import jax

    from openpi import transforms as _transforms
    from openpi.models import gemma as _gemma
    from openpi.models import model as _model
    from openpi.sim import experiment
    from openpi.sim import gate
    from openpi.sim import metrics
    from openpi.sim import tabletop
    from openpi.training import data_loader as _dl
    from openpi.training import optimizer as _optimizer
    from openpi.training import trainer as _trainer

    out = args.out.expanduser().absolute()
    experiment.prepare_run_dir(out)
    if json.loads(args.gemma):
        _gemma._VARIANTS["dummy"] = dataclasses.replace(_gemma._VARIANTS["dummy"], **json.loads(args.gemma))
    # Norm stats exactly as the gate computes them, from a small demonstration dataset written the real way.
    stats_data = out / "data" / "stats_demos"
    exp = experiment.ExperimentConfig(
        out_dir=out, budget=dataclasses.replace(experiment.Budget(), policy_steps=args.steps)
    )
    envs = experiment.make_envs(exp)
    if not stats_data.exists():
        demos = gate.demonstrations(gate.GateConfig(out_dir=out, layouts=100), envs)
        experiment.write_episodes(stats_data, demos, envs, exp.image_size)
    cfg = experiment.policy_train_config(exp, f"sweep_{args.tag}", "sim_pi05", stats_data)
    schedule = _optimizer.CosineDecaySchedule(
        warmup_steps=min(50, args.steps // 4), peak_lr=args.lr, decay_steps=args.steps, decay_lr=args.lr / 20
    )
    model_config = dataclasses.replace(cfg.model, **json.loads(args.model))
    cfg = dataclasses.replace(cfg, model=model_config, batch_size=args.batch_size, lr_schedule=schedule)
    dc = cfg.create_data_config()
    chain = _transforms.compose(
        [*dc.data_transforms.inputs, _transforms.Normalize(dc.norm_stats, use_quantiles=dc.use_quantile_norm),
         *dc.model_transforms.inputs]
    )  # fmt: skip
    unnormalize = _transforms.Unnormalize(dc.norm_stats, use_quantiles=dc.use_quantile_norm)

    start = time.monotonic()
    task_envs = experiment.make_envs(dataclasses.replace(exp, tasks=args.tasks))
    episodes = gate.demonstrations(gate.GateConfig(out_dir=out, layouts=args.layouts), task_envs)
    frames = _frames(episodes, model_config.action_horizon)
    seeds = np.array([f.pop("seed") for f in frames])
    warm_idx = np.flatnonzero(np.searchsorted(np.unique(seeds), seeds) < args.warm_layouts)
    data = jax.tree.map(np.asarray, _dl.stack_items([chain(dict(f)) for f in frames]))
    print(f"data: {args.layouts * len(args.tasks)} episodes, {len(frames)} frames in {time.monotonic() - start:.0f}s")

    model = model_config.model()
    sample = jax.jit(lambda p, r, o: model.sample_actions(p, r, o, num_steps=args.num_flow_steps))

    def evaluate(params, first_seed: int, *, same_layouts: bool = False) -> dict:
        """Closed-loop episodes from `first_seed` on; `same_layouts`: every task on the same seeds (as in training)."""
        envs, obs = [], []
        for i, task in enumerate(args.tasks):
            for k in range(args.eval_per_task):
                env = tabletop.TabletopEnv(task)
                obs.append(env.reset(first_seed + (0 if same_layouts else 10_000 * i) + k))
                envs.append(env)
        plans, used, first_error = [None] * len(envs), [0] * len(envs), [None] * len(envs)
        key = jax.random.key(123)
        while not all(e.done for e in envs):
            due = [j for j, e in enumerate(envs) if not e.done and (plans[j] is None or used[j] >= args.replan_steps)]
            if due:
                batch = _dl.stack_items([chain({k: obs[j][k] for k in ("images", "state", "prompt")}) for j in due])
                key, sub = jax.random.split(key)
                chunks = np.asarray(sample(params, sub, _model.Observation.from_dict(batch)))
                chunks = unnormalize({"actions": chunks})["actions"][..., : tabletop.TabletopEnv.action_dim]
                for j, chunk in zip(due, chunks, strict=True):
                    plans[j], used[j] = chunk, 0
                    if first_error[j] is None:
                        target = envs[j].buttons[envs[j].target]
                        first_error[j] = float(np.linalg.norm((chunk[0, :2] + 1) / 2 - target))
            for j, env in enumerate(envs):
                if not env.done:
                    obs[j] = env.step(plans[j][used[j]])
                    used[j] += 1
        successes = int(sum(e.success for e in envs))
        return {"successes": successes, "episodes": len(envs), "success_rate": successes / len(envs),
                "ci95": list(metrics.wilson_interval(successes, len(envs))), "first_target_error": float(np.mean(first_error))}  # fmt: skip

    trainer = _trainer.policy_trainer(cfg)
    rng = jax.random.key(cfg.seed)
    state = jax.jit(trainer.init)(rng, None)
    step = jax.jit(trainer.step, donate_argnums=(1,))
    order = np.random.default_rng(cfg.seed)
    curve, losses, train_s, tick = [], [], 0.0, time.monotonic()
    for i in range(args.steps):
        idx = order.integers(0, len(frames), args.batch_size)
        if i < args.warm_steps:
            idx = warm_idx[order.integers(0, len(warm_idx), args.batch_size)]
        state, info = step(rng, state, jax.tree.map(lambda x, idx=idx: x[idx], data))
        if i % 250 == 0 or i == args.steps - 1:
            losses.append((i, float(info["loss"])))
            print(f"step {i} loss {losses[-1][1]:.4f} {(i + 1) / (train_s + time.monotonic() - tick):.2f} it/s")
        if args.eval_every and (i + 1) % args.eval_every == 0 and i + 1 < args.steps:
            train_s += time.monotonic() - tick
            result = evaluate(trainer.inference_params(state), gate.VALIDATION_SEED)
            curve.append({"step": i + 1, **result})
            print(
                f"EVAL@{i + 1}: success {result['success_rate']:.3f} first-target error {result['first_target_error']:.3f}"
            )
            tick = time.monotonic()
    train_s += time.monotonic() - tick
    final = evaluate(trainer.inference_params(state), gate.VALIDATION_SEED)
    # The training layouts themselves (seeds 0.. under every prompt): can the model even memorise the demonstrations?
    training = evaluate(trainer.inference_params(state), min(int(s) for s in seeds), same_layouts=True)
    record = {"tag": args.tag, "args": {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in dataclasses.asdict(args).items()},
              "frames": len(frames), "train_seconds": round(train_s, 1), "steps_per_s": round(args.steps / train_s, 2),
              "losses": losses, "curve": curve, "validation": final,
              "training_layouts": training}  # fmt: skip
    with open(out / "sweep.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"RESULT {args.tag}: validation success {final['successes']}/{final['episodes']} "
          f"first-target error {final['first_target_error']:.3f} (training layouts {training['successes']}/"
          f"{training['episodes']}, error {training['first_target_error']:.3f}); {args.steps} steps in {train_s:.0f}s")  # fmt: skip
    return record


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="sim_gate_sweep")
