"""`scripts/add_recap_columns.py`, stage 1 of the RECAP loop: write a copy of your LeRobot dataset
(v2.1 or v3.0) with the five RECAP columns.

    # DAgger rollouts: per-frame `intervention` flags, outcomes on the last frame of a `success` column
    uv run scripts/add_recap_columns.py /data/yam_rollouts --output-dir /data/yam_rollouts_recap

    # outcomes kept by the operator in a file ({"0": true, "1": false, ...} or a CSV episode_index,success)
    uv run scripts/add_recap_columns.py /data/yam_rollouts --output-dir /data/out --success-file outcomes.json

    # human demonstrations only: every frame human, every episode a success
    uv run scripts/add_recap_columns.py /data/yam_demos --output-dir /data/yam_demos_recap --demos --all-success

    # a new batch of rollouts, labelled on the value scale of the first batch (same per-task normaliser)
    uv run scripts/add_recap_columns.py /data/batch2 --output-dir /data/batch2_recap --task-max-length-from /data/batch1_recap

    # community-converter labels, a dataset that already has (older) RECAP columns
    uv run scripts/add_recap_columns.py /data/old --output-dir /data/new --mode per_episode --overwrite-columns

The new dataset gets `intervention`, `reward`, `reward_label`, `value_label` and `adv_ind` (RECAP.md);
human frames start `positive`, autonomous frames `none` until the value model relabels them
(`scripts/label_advantage_from_vlm.py`). The source is never modified: data files are rewritten into
the new directory, videos are hard-linked (copied with --copy-videos), and the result appears at
--output-dir only once complete. A summary (episodes, success rate, human-frame fraction per task) is
printed to stdout.
"""

from collections.abc import Sequence
import dataclasses
import logging
import pathlib
import time
from typing import Annotated
from typing import Literal

import tyro

from openpi.datasets import convert
from openpi.recap import labels
from openpi.shared import cli as _cli

logger = logging.getLogger("openpi.add_recap_columns")


@dataclasses.dataclass(frozen=True)
class Args:
    source: tyro.conf.Positional[Annotated[str, tyro.conf.arg(metavar="SOURCE")]]
    """Dataset root, or `<org>/<name>` under $HF_LEROBOT_HOME. It is only read."""
    output_dir: pathlib.Path
    """Root of the new dataset; must not exist unless --overwrite."""
    intervention_column: str = labels.INTERVENTION
    """Per-frame human flag (1 = a human drove the robot, 0 = the policy did)."""
    demos: bool = False
    """Every frame is a human demonstration; no intervention column is read."""
    success_column: str | None = None
    """Column whose last-frame value is each episode's outcome (true / > 0 = success). Default: the first of
    success, next.success, is_success, reward, next.reward that the dataset has."""
    success_file: pathlib.Path | None = None
    """JSON or CSV file mapping episode_index to success (instead of a column)."""
    all_success: bool = False
    """Every episode succeeded (instead of a column or a file)."""
    mode: Literal["paper", "per_episode"] = "paper"
    """paper: per-task max-length normalisation and a failure penalty; per_episode: community converters."""
    c_fail: float | None = None
    """Failure penalty in steps (paper mode); default: the task's maximum episode length."""
    task_max_length_from: str | None = None
    """An earlier RECAP dataset whose recorded per-task normaliser and c_fail (its meta/recap.json) label this one
    too (paper mode), so a new batch of rollouts is on the same value scale; a longer episode is refused."""
    overwrite_columns: bool = False
    """Recompute RECAP columns the dataset already has (in the new dataset only)."""
    overwrite: bool = False
    """Replace an existing dataset at --output-dir (atomically)."""
    copy_videos: bool = False
    """Copy video files instead of hard-linking them."""


def run(args: Args) -> convert.ConvertResult:
    start = time.perf_counter()
    if args.mode == "per_episode" and args.c_fail is not None:
        logger.warning("--c-fail is ignored in per_episode mode (failures are a flat -1 there)")
    reference = None
    c_fail = args.c_fail
    if args.task_max_length_from is not None:
        # The normaliser (and c_fail) the reference's labels were made with, as recorded in its meta/recap.json.
        scale = convert.reference_label_scale(args.task_max_length_from, args.c_fail)
        reference, c_fail = dict(scale.task_normaliser), scale.c_fail
    config = convert.ConvertConfig(
        intervention_column=args.intervention_column,
        demos=args.demos,
        success_column=args.success_column,
        success_file=args.success_file,
        all_success=args.all_success,
        labels=labels.LabelConfig(mode=args.mode, c_fail=c_fail),
        task_max_length=reference,
        overwrite_columns=args.overwrite_columns,
    )
    result = convert.add_recap_columns(
        args.source, args.output_dir, config, overwrite=args.overwrite, link_videos=not args.copy_videos
    )
    logger.info(
        "wrote %s: %d episodes, %d frames in %.1fs",
        result.dataset.root,
        result.dataset.num_episodes,
        result.dataset.num_frames,
        time.perf_counter() - start,
    )
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """The script `add_recap_columns.py`: tyro flags, user errors as one logged line with exit status 2."""

    def run_and_print(args: list[str]) -> None:
        result = run(_cli.parse(Args, args, prog="add_recap_columns.py", description=__doc__))
        print(convert.format_summary(result.summary))

    _cli.run(run_and_print, argv, name="openpi.add_recap_columns")


if __name__ == "__main__":
    main()
