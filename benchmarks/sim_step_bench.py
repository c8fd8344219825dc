"""Toy train-step speed on the simulated task: the jitted step, the loader, and how to use both cores.

What a `sim_pi05` step at batch 32 costs on this machine and which part dominates:
- the jitted train step alone on a fixed random batch, as configured (layer scan unrolled, lean masked softmax) and
  with the scan rolled (the layout before; the old softmax is gone, tests/sim_step_numerics_test.py compares it);
- per-process step time under three thread schedules, each in fresh processes: one process with XLA's default
  thread pool (2 threads here), one single-threaded process alone, and two single-threaded processes side by side;
- whole trainings (the project's trainer and loader, checkpoint included) of two arms: one after the other in this
  process, and side by side in two single-threaded processes (`openpi.training.parallel`, what the experiment uses);
- the loader alone (`data_loader.create_data_loader`, with and without the frame cache) and loader + step.
The dataset is written by the project's collection code (clean expert demonstrations of the tabletop tasks).

    uv run benchmarks/sim_step_bench.py                     # 100 layouts x 3 prompts, sim_pi05, batch 32
    uv run benchmarks/sim_step_bench.py --train-steps 300   # shorter whole trainings

Prints a table and writes benchmarks/results/sim_step_bench.json (with the machine and its load average).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sim_step_bench.json"


@dataclasses.dataclass(frozen=True)
class Args:
    configs: tuple[str, ...] = ("sim_pi05",)
    layouts: int = 100
    """Layouts x 3 prompts of expert demonstrations (100: ~2,800 frames, so a whole epoch is quick to time)."""
    batch_size: int = 32
    steps: int = 60
    """Timed steps per measurement (after warm-up)."""
    train_steps: int = 600
    """Steps of each of the two whole trainings timed per schedule."""
    out: pathlib.Path = pathlib.Path("./sim_output/sim_step_bench")
    save_results: bool = True
    child_step: str = ""
    """Internal: time the jitted step of this config in this (child) process and print one JSON line."""


def _timed(fn, n: int) -> float:
    """Seconds per call of fn() over n calls (after one warm-up call)."""
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def measure(config_name: str, data_root: pathlib.Path, out: pathlib.Path, args: Args) -> list[dict]:
    import jax

    from openpi.sim import experiment
    from openpi.training import sharding as _sharding
    from openpi.training import trainer as _trainer

    exp = experiment.ExperimentConfig(out_dir=out, budget=dataclasses.replace(experiment.Budget(), policy_steps=1000))
    rows = []
    for cache_gb in (0.0, 2.0):
        name = f"{config_name}_cache{cache_gb:g}"
        cfg = experiment.policy_train_config(exp, name, config_name, data_root)
        cfg = dataclasses.replace(cfg, batch_size=args.batch_size, frame_cache_gb=cache_gb)
        mesh = _sharding.make_mesh(cfg.fsdp_devices)
        task = _trainer.PolicyTask(cfg)
        task.preflight(mesh)
        sharding = _sharding.data_sharding(mesh)
        n = args.steps
        epoch = -(-len(task.dataset) // cfg.batch_size)
        # The jitted step alone, on one fixed batch (what no loader can make faster), timed before any loader exists:
        # a loader's prefetching threads share the cores and would slow the step by ~25 %.
        trainer = task.trainer
        rng = jax.random.key(0)
        state = jax.jit(trainer.init)(rng, None)
        step = jax.jit(trainer.step, donate_argnums=(1,))
        batch = next(iter(task.create_loader(sharding=sharding, start_step=0, num_batches=1)))
        holder = {"state": state}

        def one_step(batch=batch, holder=holder, step=step, rng=rng):
            holder["state"], info = step(rng, holder["state"], batch)
            jax.block_until_ready(info)

        step_s = _timed(one_step, n)
        # Loader alone, cold (the first pass: row groups and frames read for the first time) and warm (a later
        # epoch, when the reader's row-group cache and the frame cache, if on, hold the dataset).
        loader = iter(task.create_loader(sharding=sharding, start_step=0, num_batches=epoch + n + 1))
        next(loader)
        start = time.perf_counter()
        for _ in range(epoch - 1):
            next(loader)
        first = (time.perf_counter() - start) / (epoch - 1)
        start = time.perf_counter()
        for _ in range(n):
            next(loader)
        later = (time.perf_counter() - start) / n
        # Both, as trainer.run drives them (prefetching loader threads overlapping the step), after one epoch.
        loader = iter(task.create_loader(sharding=sharding, start_step=0, num_batches=epoch + n + 1))
        for _ in range(epoch):
            next(loader)

        def loaded_step(loader=loader, holder=holder, step=step, rng=rng):
            holder["state"], info = step(rng, holder["state"], next(loader))
            jax.block_until_ready(info)

        both_s = _timed(loaded_step, n - 1)
        rows.append(
            {
                "config": config_name,
                "frame_cache_gb": cache_gb,
                "frames": len(task.dataset),
                "batch_size": cfg.batch_size,
                "loader_ms_first_epoch": round(first * 1e3, 1),
                "loader_ms_later_epoch": round(later * 1e3, 1),
                "jit_step_ms": round(step_s * 1e3, 1),
                "step_with_loading_ms": round(both_s * 1e3, 1),
            }
        )
    return rows


def jit_step_ms(config, steps: int) -> float:
    """Milliseconds per jitted train step of `config` on a fixed random batch (after compiling and warming up)."""
    import jax

    from openpi.training import trainer as _trainer
    from openpi.training import utils as _utils

    trainer = _trainer.policy_trainer(config)
    rng = jax.random.key(0)
    holder = {"state": jax.jit(trainer.init)(rng, None)}
    step = jax.jit(trainer.step, donate_argnums=(1,))
    batch = _utils.random_batch(config.model, config.batch_size)

    def one_step():
        holder["state"], info = step(rng, holder["state"], batch)
        jax.block_until_ready(info)

    one_step()
    return _timed(one_step, steps) * 1e3


def _config_at(name: str, batch_size: int, **model_fields):
    from openpi.training import config as _config

    config = _config.get_config(name)
    return dataclasses.replace(config, batch_size=batch_size, model=dataclasses.replace(config.model, **model_fields))


def thread_schedules(config_name: str, args: Args) -> dict:
    """Per-process ms per jitted step in fresh processes: default threads, one thread alone, two 1-thread side by
    side; and the steps per second the machine gets from each schedule."""
    from openpi.training import parallel

    def start(single: bool) -> subprocess.Popen:
        cmd = [sys.executable, __file__, f"--child-step={config_name}", f"--batch-size={args.batch_size}",
               f"--steps={args.steps}"]  # fmt: skip
        env = parallel.single_thread_env() if single else dict(os.environ)
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)

    def ms(procs) -> list[float]:
        outs = [p.communicate()[0] for p in procs]
        return [json.loads(o.strip().splitlines()[-1])["ms"] for o in outs]

    default = ms([start(False)])[0]
    alone = ms([start(True)])[0]
    pair = ms([start(True), start(True)])
    return {
        "default_threads_ms": round(default, 1),
        "one_thread_alone_ms": round(alone, 1),
        "two_single_thread_processes_ms": [round(x, 1) for x in pair],
        "machine_steps_per_s": {
            "one_process_default_threads": round(1e3 / default, 2),
            "two_single_thread_processes": round(sum(1e3 / x for x in pair), 2),
        },
    }


def whole_trainings(config_name: str, data_root: pathlib.Path, out: pathlib.Path, args: Args) -> dict:
    """Wall time of two whole trainings (different seeds) one after the other in this process, and side by side in
    two single-threaded processes."""
    from openpi.sim import experiment
    from openpi.training import parallel

    budget = dataclasses.replace(experiment.Budget(), policy_steps=args.train_steps, batch_size=args.batch_size)
    exp = experiment.ExperimentConfig(out_dir=out, budget=budget)

    def configs(tag: str):
        return [
            experiment.policy_train_config(exp, f"{tag}{seed}", config_name, data_root, overrides={"seed": seed})
            for seed in (0, 1)
        ]

    sequential = parallel.train_in_processes(configs("sequential"), processes=0)
    side_by_side = parallel.train_in_processes(configs("parallel"), processes=2)
    steps = 2 * args.train_steps
    return {
        "trainings": 2,
        "steps_each": args.train_steps,
        "one_after_another_in_one_process_s": round(sequential, 1),
        "side_by_side_single_thread_s": round(side_by_side, 1),
        "machine_steps_per_s": {
            "one_after_another": round(steps / sequential, 2),
            "side_by_side": round(steps / side_by_side, 2),
        },
        "speedup": round(sequential / side_by_side, 2),
    }


def main(args: Args) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run_all

    from openpi.sim import experiment
    from openpi.sim import gate

    if args.child_step:
        ms = jit_step_ms(_config_at(args.child_step, args.batch_size), args.steps)
        print(json.dumps({"ms": ms}))
        return {"ms": ms}
    out = args.out.expanduser().absolute()
    experiment.clean_outputs(out)
    experiment.prepare_run_dir(out)
    config = gate.GateConfig(out_dir=out, layouts=args.layouts)
    exp = experiment.ExperimentConfig(out_dir=out)
    envs = experiment.make_envs(exp)
    data_root = experiment.write_episodes(out / "data" / "demos", gate.demonstrations(config, envs), envs, 32)
    load_before = os.getloadavg()[0]
    rows = [row for name in args.configs for row in measure(name, data_root, out, args)]
    header = f"{'config':12s} {'cache GB':>8s} {'frames':>7s} {'loader ms (1st/later epoch)':>28s} {'jit step ms':>12s} {'step+load ms':>13s}"
    print(header)
    print("-" * len(header))
    for r in rows:
        loader = f"{r['loader_ms_first_epoch']:.1f} / {r['loader_ms_later_epoch']:.1f}"
        print(
            f"{r['config']:12s} {r['frame_cache_gb']:8g} {r['frames']:7d} {loader:>28s} {r['jit_step_ms']:12.1f} "
            f"{r['step_with_loading_ms']:13.1f}"
        )
    steps = {}
    for name in args.configs:
        configured = jit_step_ms(_config_at(name, args.batch_size), args.steps)
        rolled = jit_step_ms(_config_at(name, args.batch_size, unroll_layers=False), args.steps)
        steps[name] = {"jit_step_ms": round(configured, 1), "jit_step_ms_rolled_scan": round(rolled, 1),
                       "threads": thread_schedules(name, args),
                       "whole_trainings": whole_trainings(name, data_root, out, args)}  # fmt: skip
    for name, r in steps.items():
        t, w = r["threads"], r["whole_trainings"]
        print(f"\n{name} at batch {args.batch_size}: jitted step {r['jit_step_ms']:.1f} ms "
              f"(rolled scan {r['jit_step_ms_rolled_scan']:.1f} ms)")  # fmt: skip
        print(f"{'schedule':44s} {'ms/step per process':>20s} {'steps/s per machine':>20s}")
        pair = " / ".join(f"{x:.1f}" for x in t["two_single_thread_processes_ms"])
        print(f"{'one process, default threads':44s} {t['default_threads_ms']:20.1f} "
              f"{t['machine_steps_per_s']['one_process_default_threads']:20.2f}")  # fmt: skip
        print(f"{'one single-thread process alone':44s} {t['one_thread_alone_ms']:20.1f} {'':>20s}")
        print(f"{'two single-thread processes side by side':44s} {pair:>20s} "
              f"{t['machine_steps_per_s']['two_single_thread_processes']:20.2f}")  # fmt: skip
        print(
            f"two whole trainings of {w['steps_each']} steps: {w['one_after_another_in_one_process_s']:.0f} s one "
            f"after another, {w['side_by_side_single_thread_s']:.0f} s side by side ({w['speedup']:.2f}x)"
        )
    results = {
        "rows": rows,
        "steps": steps,
        "layouts": args.layouts,
        "machine": run_all.machine_description(),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }
    if args.save_results:
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"Wrote {RESULTS}")
    return results


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="sim_step_bench")
