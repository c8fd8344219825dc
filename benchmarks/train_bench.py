"""Policy training speed: compile time, step time, MFU and peak device memory of the jitted train step,
and data-loader throughput on a synthetic YAM LeRobot dataset.

CPU size: `debug_pi06` (dummy Gemma experts, tiny SigLIP) at batch 2, on real synthetic frames through the
full transform chain. `--full` (needs a GPU): `pi06_yam_vial_30fps` (full fine-tune) and
`pi06_yam_vial_30fps_lora` (LoRA, batch 4) with random weights on inputs shaped like the model's, one device.

    uv run benchmarks/train_bench.py [--full] [--steps 10]
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import tempfile
import time

import jax
import numpy as np

from openpi.datasets import synthetic
from openpi.shared import flops as _flops
from openpi.shared import normalize
from openpi.shared import testing
from openpi.training import config as _config
from openpi.training import data_loader as _data_loader
from openpi.training import sharding as _sharding
from openpi.training import trainer as _trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_bench.json"
PEAK_BF16_FLOPS = 790e12  # H100/H200 dense bf16, as measured anchors (ARCHITECTURE.md)


@dataclasses.dataclass(frozen=True)
class Args:
    full: bool = False
    """Full-size pi0.6 configs (needs a GPU) instead of debug_pi06 on CPU."""
    steps: int = 10
    """Timed train steps (after one untimed step)."""
    loader_batches: int = 20
    """Batches for the data-loader throughput measurement (CPU mode)."""
    batch_size: int | None = None
    """Override the config's batch size."""


def _synthetic_workspace(root: pathlib.Path) -> tuple[str, str, str]:
    data = root / "yam_synthetic"
    synthetic.write_dataset(data, synthetic.SyntheticConfig(num_episodes=8, image_size=64))
    from openpi.datasets import lerobot

    ds = lerobot.LeRobotDataset.open(data)
    stats = {
        "state": normalize.compute(np.asarray(ds.column(synthetic.STATE), np.float32)),
        "actions": normalize.compute(np.asarray(ds.column(synthetic.ACTION), np.float32)),
    }
    normalize.save(root / "assets" / "yam_synthetic", stats)
    spm = testing.train_tiny_sentencepiece(root / "spm.model")
    return str(data), str(root / "assets"), str(spm)


def measure_step(cfg: _config.TrainConfig, batch_fn, steps: int) -> dict[str, float]:
    """Compiles and times the train step on one device (`batch_fn(step)` -> numpy batch)."""
    trainer = _trainer.policy_trainer(cfg)
    mesh = _sharding.make_mesh(1)
    rng = jax.random.key(0)
    state_shape = jax.eval_shape(trainer.init, rng)
    state_sharding = _sharding.fsdp_sharding(state_shape, mesh)
    start = time.perf_counter()
    state = jax.jit(trainer.init, out_shardings=state_sharding)(rng)
    jax.block_until_ready(state)
    init_s = time.perf_counter() - start
    batch = jax.device_put(batch_fn(0), _sharding.data_sharding(mesh))
    start = time.perf_counter()
    traced = jax.jit(trainer.step, donate_argnums=(1,)).trace(rng, state, batch)
    compiled = traced.lower().compile()
    compile_s = time.perf_counter() - start
    # From the jaxpr: XLA's cost_analysis counts a scanned layer stack's body once (openpi.shared.flops).
    flops = _flops.jaxpr_flops(traced.jaxpr)
    state, info = compiled(rng, state, batch)
    jax.block_until_ready(info)
    times = []
    for i in range(steps):
        batch = jax.device_put(batch_fn(i + 1), _sharding.data_sharding(mesh))
        start = time.perf_counter()
        state, info = compiled(rng, state, batch)
        jax.block_until_ready(info)
        times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    out = {
        "batch_size": cfg.batch_size,
        "init_s": init_s,
        "compile_s": compile_s,
        "step_s_median": step_s,
        "step_s_p90": float(np.percentile(times, 90)),
        "loss_last": float(info["loss"]),
        "flops_per_step": flops,
    }
    device = jax.devices()[0]
    if device.platform == "gpu":
        out["mfu"] = flops / step_s / PEAK_BF16_FLOPS if flops else None
        stats = device.memory_stats() or {}
        out["peak_memory_gib"] = stats.get("peak_bytes_in_use", 0) / 2**30
    return out


def cpu_bench(args: Args) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        repo_id, assets, spm = _synthetic_workspace(pathlib.Path(tmp))
        base = _config.get_config("debug_pi06")
        cfg = dataclasses.replace(
            base,
            data=dataclasses.replace(base.data, repo_id=repo_id),
            assets_base_dir=assets,
            tokenizer_path=spm,
            batch_size=args.batch_size or base.batch_size,
            checkpoint_base_dir=str(pathlib.Path(tmp) / "ckpt"),
        )
        rows = []
        for workers in (0, 2):
            loader = _data_loader.create_data_loader(
                dataclasses.replace(cfg, num_workers=workers, batch_size=8), num_batches=args.loader_batches
            )
            start = time.perf_counter()
            n = sum(1 for _ in loader)
            elapsed = time.perf_counter() - start
            rows.append({"name": f"loader_workers_{workers}", "frames_per_s": n * 8 / elapsed})
        batches = list(_data_loader.create_data_loader(cfg, num_batches=args.steps + 1))
        rows.append({"name": "debug_pi06_step", **measure_step(cfg, lambda i: batches[i], args.steps)})
        return rows


def gpu_bench(args: Args) -> list[dict]:
    rows = []
    for name in ("pi06_yam_vial_30fps_lora", "pi06_yam_vial_30fps"):
        base = _config.get_config(name)
        cfg = dataclasses.replace(base, data=_config.FakeDataConfig(), batch_size=args.batch_size or base.batch_size)
        item = _data_loader.FakeItemFn(cfg.model)
        batches = [
            _data_loader.stack_items([item(0, s * cfg.batch_size + j) for j in range(cfg.batch_size)]) for s in range(2)
        ]
        try:
            rows.append({"name": name, **measure_step(cfg, lambda i, b=batches: b[i % 2], args.steps)})
        except Exception as e:  # report OOM and continue with the next config
            rows.append({"name": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})
    return rows


def main(args: Args) -> None:
    rows = gpu_bench(args) if args.full else cpu_bench(args)
    print(f"train_bench ({'full' if args.full else 'cpu'}) on {jax.devices()[0].device_kind}")
    for row in rows:
        print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {"mode": "full" if args.full else "cpu", "device": jax.devices()[0].device_kind, "cases": rows}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(RESULTS)


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="train_bench")
