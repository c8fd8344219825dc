"""Toy train-step speed on the simulated task, split into data loading and the jitted step.

What a `sim_pi05` step at batch 32 costs on this machine, and which part dominates: the loader alone (batches per
second out of `data_loader.create_data_loader`, the trainer's loader, with and without the frame cache), the
jitted train step alone on a fixed batch, and the two together as `trainer.run` drives them (loader threads
overlapping the step). The dataset is written by the project's collection code (clean expert demonstrations of
the tabletop tasks) at a chosen size, so the "dataset outgrew the loader's cache" case is measured too.

    uv run benchmarks/sim_step_bench.py                     # 100 layouts x 3 prompts, sim_pi05, batch 32
    uv run benchmarks/sim_step_bench.py --layouts 1000      # ten times the data (a longer first epoch)

Prints a table and writes benchmarks/results/sim_step_bench.json (with the machine and its load average).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
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
    out: pathlib.Path = pathlib.Path("./sim_output/sim_step_bench")
    save_results: bool = True


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
        # The jitted step alone, on one fixed batch (what no loader can make faster).
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


def main(args: Args) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run_all

    from openpi.sim import experiment
    from openpi.sim import gate

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
    results = {
        "rows": rows,
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
