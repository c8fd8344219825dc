"""Norm-stats benchmark: `compute_norm_stats` on a synthetic 1,000,000-frame parquet dataset (state + action, 14-dim).

openpi users report norm-stats runs of 30+ hours on large datasets, because openpi pushes every frame
(images included) through its data pipeline. Here the stats come from the two parquet columns, reduced as
whole arrays. Target: <= 60 s for 1M frames on 2 CPU cores.

    uv run benchmarks/norm_stats_bench.py                     # 1,000,000 frames
    uv run benchmarks/norm_stats_bench.py --frames 200000 --chunk-horizon 50

Rows: writing the dataset (setup, not timed against the target), opening it (parquet read), the stats
(the script's default: per-frame), openpi-style chunked delta-action stats (`--chunk-horizon`), and the
atomic write of norm_stats.json. The end-to-end number is open + stats + save, what
`scripts/compute_norm_stats.py <dataset>` spends. Results go to `benchmarks/results/norm_stats_bench.json`.
"""

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
import time

import numpy as np

from openpi.datasets import lerobot
from openpi.shared import normalize
from openpi.training import norm_stats as compute_norm_stats

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "norm_stats_bench.json"
NAMES = [
    *(f"left_joint_{i}" for i in range(6)),
    "left_gripper",
    *(f"right_joint_{i}" for i in range(6)),
    "right_gripper",
]


@dataclasses.dataclass(frozen=True)
class Args:
    frames: int = 1_000_000
    episode_length: int = 1000
    chunk_horizon: int = 10
    """Also time chunked stats with this action horizon and YAM's delta mask (0 skips it)."""
    workdir: pathlib.Path | None = None
    """Where to write the dataset (default: a temporary directory, deleted afterwards)."""
    full: bool = False
    """Accepted for benchmarks/run_all.py; the size is the same."""
    seed: int = 0


def _write_dataset(root: pathlib.Path, frames: int, episode_length: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    spec = {"dtype": "float32", "shape": [14], "names": NAMES}
    writer = lerobot.LeRobotDatasetWriter.create(
        root, fps=30, features={"observation.state": spec, "action": spec}, robot_type="yam", use_videos=False
    )
    with writer:
        done = 0
        while done < frames:
            n = min(episode_length, frames - done)
            # A random walk per joint, like a real trajectory; actions lead the state by one step.
            walk = np.cumsum(rng.normal(0, 0.01, (n + 1, 14)), axis=0) + rng.normal(0, 0.5, 14)
            writer.add_episode({"observation.state": walk[:-1], "action": walk[1:]}, "benchmark task")
            done += n
        writer.finalize()


def _timed(fn):
    """Returns (result, (wall seconds, CPU seconds)): CPU time stays meaningful on a shared machine."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - start, time.process_time() - cpu)


def main(args: Args) -> dict:
    tmp = None
    base = args.workdir
    if base is None:
        tmp = tempfile.mkdtemp(prefix="norm_stats_bench_")
        base = pathlib.Path(tmp)
    root = base / "ds"
    try:
        rows = []
        if not root.exists():
            _, t_write = _timed(lambda: _write_dataset(root, args.frames, args.episode_length, args.seed))
            rows.append(("write dataset (setup)", t_write))
        ds, t_open = _timed(lambda: lerobot.LeRobotDataset.open(root))
        stats, t_stats = _timed(lambda: compute_norm_stats.compute_norm_stats(ds))
        _, t_save = _timed(lambda: normalize.save(base / "assets", stats))
        rows += [
            ("open dataset (parquet read)", t_open),
            ("stats state+actions (per frame)", t_stats),
            ("save norm_stats.json", t_save),
        ]
        t_chunk = None
        if args.chunk_horizon > 0:
            mask = compute_norm_stats.bool_mask((6, -1, 6, -1))
            _, t_chunk = _timed(
                lambda: compute_norm_stats.compute_norm_stats(ds, action_horizon=args.chunk_horizon, delta_mask=mask)
            )
            rows.append((f"stats with H={args.chunk_horizon} delta chunks", t_chunk))
        # Sanity: the stats are right (the tests check exactness; here a cheap guard against a broken run).
        state = np.asarray(ds.column("observation.state"), np.float64)
        assert np.allclose(stats["state"].mean, state.mean(0), atol=1e-6)
        end_to_end = t_open[0] + t_stats[0] + t_save[0]
        end_to_end_cpu = t_open[1] + t_stats[1] + t_save[1]
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"norm stats benchmark: {args.frames:,} frames, 14-dim state + action, {os.cpu_count()} CPUs")
    print(f"{'step':<40} {'wall s':>9} {'cpu s':>9}")
    print("-" * 60)
    for name, (wall, cpu) in rows:
        print(f"{name:<40} {wall:>9.2f} {cpu:>9.2f}")
    print("-" * 60)
    print(f"{'end to end (open + stats + save)':<40} {end_to_end:>9.2f} {end_to_end_cpu:>9.2f}   target <= 60 s")
    print(f"{'throughput':<40} {args.frames / end_to_end:>9.0f} frames/s")
    result = {
        "benchmark": "norm_stats_bench",
        "frames": args.frames,
        "dims": 14,
        "cpu_count": os.cpu_count(),
        "seconds": {name: round(wall, 4) for name, (wall, _) in rows},
        "cpu_seconds": {name: round(cpu, 4) for name, (_, cpu) in rows},
        "end_to_end_s": round(end_to_end, 4),
        "end_to_end_cpu_s": round(end_to_end_cpu, 4),
        "frames_per_s": round(args.frames / end_to_end),
        "target_s": 60,
        "meets_target": end_to_end <= 60,
        "chunk_horizon": args.chunk_horizon,
        "chunked_stats_s": None if t_chunk is None else round(t_chunk[0], 4),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = RESULTS.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_json, RESULTS)
    return result


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="norm_stats_bench")
