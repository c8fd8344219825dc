"""`scripts/merge_datasets.py`: merge LeRobot datasets (v2.1 / v3.0) that share their features into one
new dataset.

    uv run scripts/merge_datasets.py /data/day1 /data/day2 local/yam_all --output-dir /data/yam_all
    uv run scripts/merge_datasets.py /data/a /data/b --output-dir /data/ab --version v2.1 --overwrite

Episodes are renumbered in order, tasks unified by their text; videos are hard-linked (or copied), never
re-encoded. Datasets whose fps, robot type or features differ are refused with the feature named.

RECAP iterations: datasets with value labels must be on one label scale (their meta/recap.json); otherwise the
merge is refused, or `--rescale-labels` recomputes reward_label/value_label on one scale (per task, the longest
normaliser). The merged dataset's meta/recap.json records the scale and its sources.

    uv run scripts/merge_datasets.py /data/iter1_recap /data/iter2_recap /data/iter3_recap \
        --output-dir /data/all_recap --rescale-labels
"""

from collections.abc import Sequence
import dataclasses
import logging
import pathlib
import time
from typing import Literal

import tyro

from openpi.datasets import merge
from openpi.shared import cli as _cli

logger = logging.getLogger("openpi.merge_datasets")


@dataclasses.dataclass(frozen=True)
class Args:
    sources: tyro.conf.Positional[tuple[str, ...]]
    """Dataset roots or `<org>/<name>` repo ids under $HF_LEROBOT_HOME, in the order their episodes should come."""
    output_dir: pathlib.Path
    """The new dataset's root; must not exist unless --overwrite."""
    version: str = "v3.0"
    """Format of the merged dataset: v3.0 (any inputs) or v2.1 (v2.1 inputs when there are videos)."""
    overwrite: bool = False
    """Replace an existing dataset at output_dir (atomically)."""
    copy_videos: bool = False
    """Copy video files instead of hard-linking them."""
    rescale_labels: bool = False
    """Recompute reward_label and value_label of the merged dataset on one label scale (per task, the longest
    normaliser of the sources), instead of refusing sources labelled on different scales."""
    convert_cameras: Literal["video", "image"] | None = None
    """Store every camera alike first: "image" decodes videos to image mode, "video" encodes images (and re-encodes
    other codecs) to the first video dataset's codec. Without it, mixed storage or codecs are refused."""
    allow_unrecorded_label_scale: bool = False
    """Merge labelled datasets that do not record their label scale (no meta/recap.json) as they are; the merged
    dataset then records its scale as unknown."""


def run(args: Args) -> pathlib.Path:
    start = time.perf_counter()
    merged = merge.merge_datasets(
        list(args.sources),
        args.output_dir,
        version=args.version,
        overwrite=args.overwrite,
        link_videos=not args.copy_videos,
        rescale_labels=args.rescale_labels,
        allow_unrecorded_label_scale=args.allow_unrecorded_label_scale,
        convert_cameras=args.convert_cameras,
    )
    logger.info(
        "merged %d datasets into %s: %d episodes, %d frames, %d tasks in %.1fs",
        len(args.sources),
        merged.root,
        merged.num_episodes,
        merged.num_frames,
        len(merged.tasks),
        time.perf_counter() - start,
    )
    return merged.root


def main(argv: Sequence[str] | None = None) -> None:
    """The script `merge_datasets.py`: tyro flags, user errors as one logged line with exit status 2."""

    def run_and_print(args: list[str]) -> None:
        print(run(_cli.parse(Args, args, prog="merge_datasets.py", description=__doc__)))

    _cli.run(run_and_print, argv, name="openpi.merge_datasets")


if __name__ == "__main__":
    main()
