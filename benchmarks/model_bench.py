"""Model speed: one training step (value_and_grad + AdamW update, jitted) and one `sample_actions` call.

For each case the first call (trace + XLA compile + run) is reported separately from the steady state, which is
the median of `--repeats` timed calls. Cases (CPU defaults):

- `pi06_dummy`: pi0.6 with dummy Gemma experts and the tiny "mu/32" SigLIP (what the demo and tests use);
- `pi06_dummy_so400m`: dummy Gemma experts with the full So400m/14 SigLIP, i.e. openpi's `debug_pi05` model
  (openpi: ~21 s per train step at batch 2 and ~2.5 s per `sample_actions` on 2 CPU cores).

`--full` benchmarks the real pi0.6 (Gemma 2B + 300M, So400m/14) instead; it needs a GPU.

    uv run benchmarks/model_bench.py [--full] [--batch-size 2] [--repeats 5] [--only pi06_dummy]
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from openpi.models import pi0_config

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "model_bench.json"


@dataclasses.dataclass(frozen=True)
class Args:
    full: bool = False
    """Benchmark the full-size pi0.6 (needs a GPU) instead of the CPU cases."""
    batch_size: int | None = None
    """Batch size; default 2 on CPU (openpi's debug config), 8 with --full."""
    repeats: int = 5
    """Timed calls per measurement after the compiling one (the median is reported)."""
    num_steps: int = 10
    """Flow-matching steps per `sample_actions`."""
    dtype: str = "bfloat16"
    """Compute dtype (openpi's default is bfloat16)."""
    only: tuple[str, ...] = ()
    """Run only these cases."""
    out: pathlib.Path = RESULTS


def cases(args: Args) -> dict[str, pi0_config.Pi0Config]:
    if args.full:
        return {"pi06_full": pi0_config.Pi0Config(pi05=True, pistar=True, dtype=args.dtype)}
    dummy = {"paligemma_variant": "dummy", "action_expert_variant": "dummy", "pi05": True, "pistar": True}
    return {
        "pi06_dummy": pi0_config.Pi0Config(dtype=args.dtype, **dummy),
        "pi06_dummy_so400m": pi0_config.Pi0Config(dtype=args.dtype, siglip_variant="So400m/14", **dummy),
    }


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(seconds of the first call, median seconds of `repeats` further calls)."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def _fake_batch(config: pi0_config.Pi0Config, batch_size: int):
    rng = np.random.default_rng(0)
    obs = config.fake_obs(batch_size)
    images = {k: jnp.asarray(rng.uniform(-1, 1, v.shape), jnp.float32) for k, v in obs.images.items()}
    prompt = jnp.asarray(rng.integers(3, 1000, obs.tokenized_prompt.shape), jnp.int32)
    obs = obs.replace(images=images, tokenized_prompt=prompt)
    actions = jnp.asarray(rng.normal(size=config.fake_act(batch_size).shape), jnp.float32)
    return obs, actions


def bench_case(name: str, config: pi0_config.Pi0Config, args: Args, batch_size: int) -> dict:
    model = config.model()
    start = time.perf_counter()
    params = jax.block_until_ready(jax.jit(model.init_params)(jax.random.key(0)))
    init_s = time.perf_counter() - start
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    obs, actions = _fake_batch(config, batch_size)

    # openpi's optimizer: AdamW (b2 0.95, tiny weight decay) after global-norm clipping.
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(2.5e-5, b1=0.9, b2=0.95, eps=1e-8, weight_decay=1e-10))

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, rng):
        def loss_fn(p):
            return jnp.mean(model.compute_loss(p, rng, obs, actions, train=True))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = {"params": params, "opt": tx.init(params), "step": 0}

    def run_train():
        state["step"] += 1
        state["params"], state["opt"], loss = train_step(state["params"], state["opt"], jax.random.key(state["step"]))
        return loss

    train_first, train_median = _timed(run_train, args.repeats)

    sample = jax.jit(functools.partial(model.sample_actions, num_steps=args.num_steps))
    sample_first, sample_median = _timed(lambda: sample(state["params"], jax.random.key(1), obs), args.repeats)
    return {
        "case": name,
        "siglip": config.siglip_variant,
        "llm": f"{config.paligemma_variant}+{config.action_expert_variant}",
        "dtype": config.dtype,
        "batch_size": batch_size,
        "params": n_params,
        "init_s": init_s,
        "train_step_first_s": train_first,
        "train_step_s": train_median,
        "sample_actions_first_s": sample_first,
        "sample_actions_s": sample_median,
    }


def main(args: Args) -> None:
    batch_size = args.batch_size or (8 if args.full else 2)
    selected = {k: v for k, v in cases(args).items() if not args.only or k in args.only}
    load_before = os.getloadavg()[0]
    rows = []
    for name, config in selected.items():
        print(f"running {name} ...", flush=True)
        rows.append(bench_case(name, config, args, batch_size))

    header = f"{'case':<20} {'siglip':<10} {'batch':>5} {'train 1st':>10} {'train':>9} {'sample 1st':>11} {'sample':>9}"
    print(header)
    for r in rows:
        print(
            f"{r['case']:<20} {r['siglip']:<10} {r['batch_size']:>5} {r['train_step_first_s']:>9.2f}s "
            f"{r['train_step_s']:>8.3f}s {r['sample_actions_first_s']:>10.2f}s {r['sample_actions_s']:>8.3f}s"
        )
    result = {
        "name": "model_bench",
        "full": args.full,
        "platform": jax.devices()[0].platform,
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "num_steps": args.num_steps,
        "repeats": args.repeats,
        # Timings are only comparable on an idle machine; a 1-minute load above the core count inflates them.
        "load_avg_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "cases": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="model_bench")
