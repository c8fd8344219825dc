"""Dataset read benchmark: random-access frames/s from a LeRobot video dataset with three 224x224 cameras.

Training samples frames in random order, so every frame costs a seek to the nearest keyframe and a
forward decode per camera (LeRobot's default encoding has a keyframe every 2 frames). This measures what
one data-loader worker gets from `LeRobotDataset.get(i)` with all cameras decoded, next to sequential
reading (no seeks), reading without cameras (parquet columns only), action chunks, and the image-mode
equivalent (PNG in parquet).

    uv run benchmarks/dataset_read_bench.py                   # 8 episodes x 150 frames, 300 random reads
    uv run benchmarks/dataset_read_bench.py --full            # 20 episodes x 300 frames, 2000 random reads

The dataset is written first with our writer (SVT-AV1, yuv420p, g=2, crf=30: LeRobot's defaults); the
write speed is reported too. Results go to `benchmarks/results/dataset_read_bench.json`.
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

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "dataset_read_bench.json"
CAMERAS = (
    "observation.images.head_camera",
    "observation.images.left_wrist_camera",
    "observation.images.right_wrist_camera",
)


@dataclasses.dataclass(frozen=True)
class Args:
    episodes: int = 8
    episode_length: int = 150
    reads: int = 300
    """Random frames read per mode."""
    size: int = 224
    fps: int = 30
    full: bool = False
    """Larger run: 20 episodes x 300 frames, 2000 random reads."""
    workdir: pathlib.Path | None = None
    """Where to write the datasets (default: a temporary directory, deleted afterwards)."""
    seed: int = 0


def _camera_frames(rng: np.random.Generator, length: int, size: int, phase: float) -> np.ndarray:
    """A textured scene panning under the camera, a moving bright block and sensor noise.

    Real camera streams are far less compressible than flat colours; a random texture (smoothed over 2x2
    pixels) that shifts a few pixels per frame gives AV1 real work, like a wrist camera moving over a table.
    """
    texture = rng.integers(0, 256, (size // 2 + 64, size // 2 + 64, 3), dtype=np.uint8)
    texture = texture.repeat(2, axis=0).repeat(2, axis=1).astype(np.int16)
    frames = np.empty((length, size, size, 3), np.uint8)
    for t in range(length):
        dy = int(32 + 30 * np.sin(0.05 * t + phase))
        dx = int(32 + 30 * np.cos(0.04 * t + phase))
        frame = texture[dy : dy + size, dx : dx + size].copy()
        r0 = int((0.5 + 0.4 * np.sin(0.1 * t + phase)) * (size - 40))
        c0 = int((0.5 + 0.4 * np.cos(0.1 * t + phase)) * (size - 40))
        frame[r0 : r0 + 40, c0 : c0 + 40] = 250
        frame += rng.integers(-4, 5, frame.shape, dtype=np.int16)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def _write(root: pathlib.Path, args: Args, use_videos: bool) -> float:
    rng = np.random.default_rng(args.seed)
    camera = {"dtype": "video", "shape": [args.size, args.size, 3], "names": ["height", "width", "channels"]}
    features = {key: dict(camera) for key in CAMERAS}
    features["observation.state"] = {"dtype": "float32", "shape": [14], "names": None}
    features["action"] = {"dtype": "float32", "shape": [14], "names": None}
    elapsed = 0.0  # writer time only; generating the synthetic frames is not counted
    start = time.perf_counter()
    writer = lerobot.LeRobotDatasetWriter.create(
        root, fps=args.fps, features=features, robot_type="yam", use_videos=use_videos
    )
    elapsed += time.perf_counter() - start
    for e in range(args.episodes):
        n = args.episode_length
        frames = {key: _camera_frames(rng, n, args.size, phase=0.1 * e + 0.3 * k) for k, key in enumerate(CAMERAS)}
        frames["observation.state"] = rng.normal(size=(n, 14)).astype(np.float32)
        frames["action"] = rng.normal(size=(n, 14)).astype(np.float32)
        start = time.perf_counter()
        writer.add_episode(frames, f"task {e % 3}")
        elapsed += time.perf_counter() - start
    start = time.perf_counter()
    writer.finalize()
    return elapsed + time.perf_counter() - start


def _rate(fn, indices) -> float:
    start = time.perf_counter()
    for i in indices:
        fn(int(i))
    return len(indices) / (time.perf_counter() - start)


def main(args: Args) -> None:
    if args.full:
        args = dataclasses.replace(args, episodes=20, episode_length=300, reads=2000)
    workdir = pathlib.Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        frames = args.episodes * args.episode_length
        write_video_s = _write(workdir / "video", args, use_videos=True)
        write_image_s = _write(workdir / "image", args, use_videos=False)
        video = lerobot.LeRobotDataset.open(workdir / "video")
        image = lerobot.LeRobotDataset.open(workdir / "image")
        rng = np.random.default_rng(args.seed + 1)
        random_idx = rng.integers(0, frames, args.reads)
        sequential_idx = np.arange(min(args.reads, frames))
        video.get(0)  # open the files once, outside the timings
        rows = {
            "random, 3 cameras (video)": _rate(video.get, random_idx),
            "sequential, 3 cameras (video)": _rate(video.get, sequential_idx),
            "random, 1 camera (video)": _rate(lambda i: video.get(i, keys=[CAMERAS[0]]), random_idx),
            "random, no cameras (parquet)": _rate(lambda i: video.get(i, keys=["observation.state"]), random_idx),
            "random, action_chunk H=50": _rate(lambda i: video.action_chunk(i, horizon=50), random_idx),
            "random, 3 cameras (image mode, PNG)": _rate(image.get, random_idx),
        }
        video_bytes = sum(p.stat().st_size for p in (workdir / "video" / "videos").rglob("*.mp4"))
        image_bytes = sum(p.stat().st_size for p in (workdir / "image" / "data").rglob("*.parquet"))
        result = {
            "benchmark": "dataset_read_bench",
            "frames": frames,
            "episodes": args.episodes,
            "cameras": len(CAMERAS),
            "image_size": args.size,
            "reads": args.reads,
            "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 1),  # other work on the machine skews the numbers
            "encoding": dataclasses.asdict(lerobot.VideoEncoding()),
            "frames_per_s": {k: round(v, 1) for k, v in rows.items()},
            "write_frames_per_s": {
                "video (encode 3 cameras)": round(frames / write_video_s, 1),
                "image mode (PNG)": round(frames / write_image_s, 1),
            },
            "bytes_per_frame": {
                "video (3 cameras)": round(video_bytes / frames),
                "image mode (3 cameras)": round(image_bytes / frames),
            },
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{frames} frames, {len(CAMERAS)} cameras {args.size}x{args.size}, {args.reads} reads per row")
    print(f"{'mode':<40} {'frames/s':>10}")
    for name, value in result["frames_per_s"].items():
        print(f"{name:<40} {value:>10.1f}")
    for name, value in result["write_frames_per_s"].items():
        print(f"{'write ' + name:<40} {value:>10.1f}")
    for name, value in result["bytes_per_frame"].items():
        print(f"{'bytes/frame ' + name:<40} {value:>10}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="dataset_read_bench")
