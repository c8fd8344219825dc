"""`scripts/make_demo_dataset.py`: write the synthetic YAM RECAP dataset that the demo trains on (see
`openpi.datasets.synthetic`).

    uv run scripts/make_demo_dataset.py --out /tmp/yam_demo
    uv run scripts/make_demo_dataset.py --out /tmp/yam_demo_v21 --num-episodes 48 --version v2.1 --image-size 96

Three cameras (head, left wrist, right wrist), 14-dim state/action in YAM order, three tasks, success and
failure episodes, human demonstrations and corrections, and the five RECAP columns. Deterministic per seed.
The dataset appears at `--out` only once it is complete.
"""

from collections.abc import Sequence
import dataclasses
import logging
import pathlib
import time
from typing import Literal

from openpi.datasets import synthetic
from openpi.recap import labels
from openpi.shared import cli as _cli

logger = logging.getLogger("openpi.make_demo_dataset")


@dataclasses.dataclass(frozen=True)
class Args:
    out: pathlib.Path
    """Dataset root to create."""
    num_episodes: int = synthetic.SyntheticConfig.num_episodes
    version: Literal["v3.0", "v2.1"] = "v3.0"
    """LeRobot format to write."""
    image_size: int = synthetic.SyntheticConfig.image_size
    """Height and width of every camera, in pixels."""
    max_length: int = synthetic.SyntheticConfig.max_length
    """Frames after which a failing rollout is stopped at the latest."""
    fps: int = synthetic.SyntheticConfig.fps
    seed: int = 0
    images: bool = False
    """Store PNG images in the parquet files instead of mp4 videos."""
    label_mode: Literal["paper", "per_episode"] = "paper"
    """RECAP label convention (see openpi.recap.labels)."""
    c_fail: float | None = None
    """Failure penalty in steps (paper mode); default: each task's maximum episode length."""
    overwrite: bool = False
    """Replace an existing dataset at --out."""


def run(args: Args):
    # The flags named like SyntheticConfig's fields are passed through as they are.
    same = ("num_episodes", "image_size", "fps", "max_length", "seed")
    config = synthetic.SyntheticConfig(
        **{name: getattr(args, name) for name in same},
        labels=labels.LabelConfig(mode=args.label_mode, c_fail=args.c_fail),
    )
    start = time.perf_counter()
    ds = synthetic.write_dataset(
        args.out, config, version=args.version, use_videos=not args.images, overwrite=args.overwrite
    )
    logger.info("Wrote %r in %.1f s.", ds, time.perf_counter() - start)
    return ds


def main(argv: Sequence[str] | None = None) -> None:
    """The script `make_demo_dataset.py`: tyro flags, user errors as one logged line with exit status 2."""

    def run_and_print(args: list[str]) -> None:
        print(run(_cli.parse(Args, args, prog="make_demo_dataset.py", description=__doc__)).root)

    _cli.run(run_and_print, argv, name="openpi.make_demo_dataset")


if __name__ == "__main__":
    main()
