"""Value model: full-size parameter counts, checkpoint sizes per freeze mode, and peak host RSS while compiling.

The community value trainer needs ~25 GB of host RAM while XLA compiles and writes ~5 GB per checkpoint. Here:

* checkpoint sizes are computed from `jax.eval_shape` of the full-size train state (SigLIP So400m/14 +
  Gemma3-270M + head): the frozen backbones, stored once per run in the compute dtype, and what every step
  writes (trainable weights, their EMA, Adam's two moments, in float32);
* peak RSS is measured in a fresh subprocess that lowers and compiles the full-size jitted train step on CPU
  from abstract inputs (`jax.ShapeDtypeStruct`s: no parameter is ever allocated), read from `ru_maxrss`.
* `--steps N` (optional) also measures the dummy-size step time on CPU.

    uv run benchmarks/value_bench.py [--batch-size 4] [--freeze-modes all_backbones none] [--skip-compile]
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "value_bench.json"


@dataclasses.dataclass(frozen=True)
class Args:
    batch_size: int = 4
    """Global batch of the compiled train step (the community anchor: 0.2 s/step at batch 4 on 24 GB)."""
    freeze_modes: tuple[str, ...] = ("all_backbones", "siglip_only", "none")
    """Freeze modes whose checkpoint sizes are reported."""
    compile_freeze_modes: tuple[str, ...] = ("all_backbones", "none")
    """Freeze modes of the compiled full-size steps (one fresh process each)."""
    skip_compile: bool = False
    """Only compute sizes (no compilation)."""
    full: bool = False
    """Accepted for benchmarks/run_all.py (this benchmark is always full-size and CPU-only)."""


def _config(freeze_mode: str, batch_size: int):
    from openpi.training import value_config

    base = value_config.get_config("value_yam_vial_30fps")
    return dataclasses.replace(
        base, batch_size=batch_size, model=dataclasses.replace(base.model, freeze_mode=freeze_mode)
    )


def sizes(freeze_mode: str) -> dict[str, float]:
    """Bytes of the frozen store and of one step directory, from the abstract train state."""
    import jax
    import numpy as np

    from openpi.models import params_io
    from openpi.training import utils as _utils
    from openpi.training import value_train

    trainer = value_train.value_trainer(_config(freeze_mode, 1))
    state = jax.eval_shape(trainer.init, jax.random.key(0))
    trainable, frozen = _utils.split_params(state.params, trainer.is_frozen)

    def nbytes(tree) -> int:
        return int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))

    trainable_b = nbytes(trainable)
    step_b = trainable_b + nbytes(state.opt_state) + (trainable_b if state.ema_params is not None else 0)
    return {
        "freeze_mode": freeze_mode,
        "total_params": _utils.count_params(state.params),
        "trainable_params": _utils.count_params(trainable),
        "frozen_params": _utils.count_params(frozen),
        "frozen_store_gb": nbytes(frozen) / 1e9,
        "per_step_gb": step_b / 1e9,
        "first_checkpoint_gb": (nbytes(frozen) + step_b) / 1e9,
        "num_param_arrays": len(params_io.flatten(state.params)),
    }


def compile_child(freeze_mode: str, batch_size: int) -> None:
    """Runs in a fresh process: lower + compile the full-size step from abstract inputs; prints JSON."""
    import jax

    from openpi.training import sharding as _sharding
    from openpi.training import value_data
    from openpi.training import value_train

    config = _config(freeze_mode, batch_size)
    trainer = value_train.value_trainer(config)
    mesh = _sharding.make_mesh(1)
    rng = jax.random.key(0)
    state_shape = jax.eval_shape(trainer.init, rng)
    state_sharding = _sharding.fsdp_sharding(state_shape, mesh)
    batch = value_data.batch_spec(config.model, batch_size)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    step = jax.jit(
        trainer.step,
        in_shardings=(_sharding.replicated(mesh), state_sharding, _sharding.data_sharding(mesh)),
        out_shardings=(state_sharding, _sharding.replicated(mesh)),
        donate_argnums=(1,),
    )
    t0 = time.perf_counter()
    lowered = step.lower(jax.ShapeDtypeStruct((), jax.random.key(0).dtype), state_shape, batch)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(
        "RESULT "
        + json.dumps(
            {
                "freeze_mode": freeze_mode,
                "batch_size": batch_size,
                "lower_s": t1 - t0,
                "compile_s": t2 - t1,
                "peak_rss_gib": peak,
                "rss_before_compile_gib": rss_before,
            }
        )
    )


def main(args: Args) -> dict:
    results: dict = {"sizes": [sizes(m) for m in args.freeze_modes]}
    results["compile"] = []
    for mode in () if args.skip_compile else args.compile_freeze_modes:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", mode, str(args.batch_size)],
            capture_output=True,
            text=True,
            check=False,
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"compile subprocess failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
        results["compile"].append(json.loads(line[len("RESULT ") :]))
    print(f"{'freeze_mode':<14} {'params':>12} {'trainable':>12} {'frozen store GB':>16} {'per step GB':>12}")
    for s in results["sizes"]:
        print(
            f"{s['freeze_mode']:<14} {s['total_params']:>12,} {s['trainable_params']:>12,} "
            f"{s['frozen_store_gb']:>16.3f} {s['per_step_gb']:>12.4f}"
        )
    for c in results["compile"]:
        print(
            f"compile full-size step ({c['freeze_mode']}, batch {c['batch_size']}): lower {c['lower_s']:.1f} s, "
            f"compile {c['compile_s']:.1f} s, peak host RSS {c['peak_rss_gib']:.2f} GiB"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        compile_child(sys.argv[2], int(sys.argv[3]))
    else:
        from openpi.shared import cli

        cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="value_bench")
