"""Relabelling throughput (frames/s): the decode-only ceiling, 1 process, 2 processes, and the full-size model.

Runs the real pipeline (`openpi.relabel.relabel.relabel`: decoding worker processes reading whole episodes, the jitted
value model on every local device, the per-episode cache, the dataset writer and the report) with freshly
initialised weights, so no checkpoint is needed. The 2-process row starts this file twice as `--role=worker`,
joined by jax.distributed on 127.0.0.1 exactly as a multi-host run is (every process initialises the same weights).

    uv run benchmarks/relabel_bench.py                 # CPU: tiny value model (value_demo size), 64 px; plus the
                                                       # full-size model (So400m/14 + Gemma3-270M) at batch 8
    uv run benchmarks/relabel_bench.py --full          # GPU: every row with the full-size model at 224 px
    uv run benchmarks/relabel_bench.py --no-full-cpu   # skip the (slow) full-size CPU row

Anchor: the community labeller relabels ~21k frames in 10-12 min at batch 8 on a 24 GB GPU (~30-35 frames/s).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "relabel_bench.json"


@dataclasses.dataclass(frozen=True)
class Args:
    full: bool = False
    """Every row with the full-size value model (value_yam_vial_30fps) at 224 px; needs a GPU to be quick."""
    full_cpu: bool = True
    """Without --full: also time the full-size model alone at batch 8 (random init) on this machine."""
    episodes: int | None = None
    """Synthetic episodes (default 24 on CPU, 96 with --full)."""
    batch_size: int | None = None
    """Inference batch per process (default 32 on CPU, 64 with --full)."""
    num_workers: int = 2
    """Decoding worker processes per relabelling process."""
    lookahead: int = 10
    role: str = "main"
    """Internal: `worker` is one process of the 2-process row."""
    spec: str = ""
    """Internal: the worker's JSON spec."""


def _value_config(full: bool):
    from openpi.training import value_config

    return value_config.get_config("value_yam_vial_30fps" if full else "value_demo")


def _model_and_factory(full: bool, data_root: pathlib.Path, tok: pathlib.Path):
    import jax

    from openpi.relabel import inference
    from openpi.training import value_data

    cfg = _value_config(full)
    params = jax.device_get(jax.jit(cfg.model.init_params)(jax.random.key(0)))
    data = dataclasses.replace(cfg.data, repo_id=str(data_root))
    factory = value_data.ValueItemFactory(data, cfg.model, None, str(tok), with_targets=False)
    return factory, inference.make_values_fn(cfg.model, params)


def _relabel(full: bool, data_root, tok, out, *, batch_size, num_workers, lookahead) -> dict:
    """One relabelling run in this process (the process may be one of several); its stats and wall time."""
    from openpi.relabel import relabel

    factory, values_fn = _model_and_factory(full, data_root, tok)
    config = relabel.RelabelConfig(
        data_dir=str(data_root), checkpoint_dir="(fresh init)", output_dir=str(out), overwrite=True,
        batch_size=batch_size, lookahead=lookahead, num_workers=num_workers, progress=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    res = relabel.relabel(config, model=(factory, values_fn, {"bench": True, "full": full}))
    return {"stats": res.stats, "wall_s": time.perf_counter() - t0}


def _decode_only(full: bool, data_root, tok, *, batch_size: int, num_workers: int, lookahead: int) -> dict:
    """The decode ceiling: the relabeller's own decoding workers, no model."""
    import numpy as np

    from openpi.datasets import lerobot
    from openpi.recap import advantage
    from openpi.relabel import decode
    from openpi.relabel import relabel
    from openpi.training import value_data

    cfg = _value_config(full)
    data = dataclasses.replace(cfg.data, repo_id=str(data_root))
    factory = value_data.ValueItemFactory(data, cfg.model, None, str(tok), with_targets=False)
    ds = lerobot.LeRobotDataset.open(data_root)
    cols = relabel.read_columns(ds)
    needed = advantage.frames_needing_values(cols.intervention == 0, cols.bounds, lookahead)
    works = relabel.episode_works(cols, needed)
    t0 = time.perf_counter()
    frames = 0
    for _, chunk, _items in decode.decode_episodes(factory, works, chunk_size=batch_size, num_workers=num_workers):
        frames += len(chunk)
    wall = time.perf_counter() - t0
    del np
    return {"frames": frames, "wall_s": wall, "frames_per_s": frames / wall}


def _full_model_batch8() -> dict:
    """The full-size value model alone (So400m/14 + Gemma3-270M, random init, 3 cameras at 224 px) at batch 8."""
    import jax
    import numpy as np

    from openpi.relabel import inference

    model = _value_config(True).model
    t0 = time.perf_counter()
    params = jax.device_get(jax.jit(model.init_params)(jax.random.key(0)))
    init_s = time.perf_counter() - t0
    values_fn = inference.make_values_fn(model, params)
    h, w = model.image_resolution
    rng = np.random.default_rng(0)
    batch = {
        "image": {c: rng.uniform(-1, 1, (8, h, w, 3)).astype(np.float32) for c in model.cameras},
        "image_mask": {c: np.ones(8, bool) for c in model.cameras},
        "state": np.zeros((8, 32), np.float32),
        "tokenized_prompt": np.ones((8, model.max_token_len), np.int32),
        "tokenized_prompt_mask": np.ones((8, model.max_token_len), bool),
    }
    t0 = time.perf_counter()
    values_fn(batch)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        values_fn(batch)
        times.append(time.perf_counter() - t0)
    params_gb = sum(x.nbytes for x in jax.tree.leaves(params)) / 2**30
    return {"init_s": init_s, "first_batch_s": compile_s, "batch_s": min(times), "frames_per_s": 8 / min(times),
            "params_gb": params_gb}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(args: Args, data_root, tok, out, *, batch_size: int) -> dict:
    port = _free_port()
    spec = json.dumps({"data": str(data_root), "tok": str(tok), "out": str(out), "batch_size": batch_size})
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_"))}
    procs = []
    t0 = time.perf_counter()
    for i in range(2):
        env = {**base, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
               "JAX_PROCESS_ID": str(i)}  # fmt: skip
        if not args.full:
            env["JAX_PLATFORMS"] = "cpu"
        cmd = [sys.executable, __file__, "--role=worker", f"--spec={spec}", f"--num-workers={args.num_workers}",
               f"--lookahead={args.lookahead}", *(["--full"] if args.full else [])]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"2-process worker failed:\n{stderr[-3000:]}")
        outs.append(json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:]))
    wall = time.perf_counter() - t0
    stats = next(o["stats"] for o in outs if "processes" in o["stats"])
    return {"stats": stats, "wall_s": wall}


def _worker(args: Args) -> None:
    from openpi.training import distributed

    distributed.maybe_initialize_distributed()
    spec = json.loads(args.spec)
    out = _relabel(
        args.full, pathlib.Path(spec["data"]), pathlib.Path(spec["tok"]), pathlib.Path(spec["out"]),
        batch_size=spec["batch_size"], num_workers=args.num_workers, lookahead=args.lookahead,
    )  # fmt: skip
    print("RESULT " + json.dumps(out, default=str), flush=True)


def main(args: Args) -> dict:
    if args.role == "worker":
        _worker(args)
        return {}
    from openpi.datasets import synthetic
    from openpi.shared import testing

    image_size = _value_config(args.full).model.image_resolution[0]
    episodes = args.episodes or (96 if args.full else 24)
    batch_size = args.batch_size or (64 if args.full else 32)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        tok = testing.train_tiny_sentencepiece(tmp / "tokenizer.model", extra_symbols=testing.GEMMA3_SYMBOLS)
        data_root = tmp / "data"
        synthetic.write_dataset(
            data_root, synthetic.SyntheticConfig(num_episodes=episodes, image_size=image_size, max_length=40)
        )
        common = {"batch_size": batch_size, "num_workers": args.num_workers, "lookahead": args.lookahead}
        decode = _decode_only(args.full, data_root, tok, **common)
        rows["decode_only"] = {"frames_per_s": decode["frames_per_s"], "frames": decode["frames"]}
        one = _relabel(args.full, data_root, tok, tmp / "out1", **common)
        two = _two_processes(args, data_root, tok, tmp / "out2", batch_size=batch_size)
        for name, run in (("1_process", one), ("2_processes", two)):
            stats = run["stats"]
            rows[name] = {
                "frames_per_s": stats["frames_per_s"],  # inference phase (decode + model), summed over processes
                "end_to_end_frames_per_s": stats["frames_total"] / run["wall_s"],
                "frames": stats["frames_total"],
                "processes": stats["processes"],
                "devices": stats["devices"],
            }
    if args.full_cpu and not args.full:
        full = _full_model_batch8()
        rows["full_model_batch8"] = {"frames_per_s": full["frames_per_s"], "batch_s": full["batch_s"],
                                     "first_batch_s": full["first_batch_s"], "params_gb": full["params_gb"]}  # fmt: skip
    import jax

    result = {
        "device": str(jax.devices()[0]),
        "model": "full (So400m/14 + Gemma3-270M)" if args.full else "tiny (value_demo)",
        "image_px": image_size,
        "batch_size": batch_size,
        "num_workers": args.num_workers,
        "cpu_count": os.cpu_count(),
        # Other work on the machine skews every row; a quiet machine has a load average below its core count.
        "load_average_1min": os.getloadavg()[0],
        "rows": rows,
    }
    print(f"{'row':<20} {'frames/s':>10}  detail")
    for name, row in rows.items():
        detail = ", ".join(
            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "frames_per_s"
        )
        print(f"{name:<20} {row['frames_per_s']:>10.2f}  {detail}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = RESULTS.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(result, indent=2) + "\n")
    tmp_path.replace(RESULTS)
    return result


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="relabel_bench")
