"""Compute `norm_stats.json` (state and actions) for a training config, a value config or a LeRobot dataset.

    uv run scripts/compute_norm_stats.py pi06_yam_vial_30fps           # a registered TrainConfig
    uv run scripts/compute_norm_stats.py value_demo --repo-id=<dataset> # a ValueTrainConfig: state stats
    uv run scripts/compute_norm_stats.py /data/my_yam_dataset           # a dataset root (or <org>/<name>)
    uv run scripts/compute_norm_stats.py /data/ds --output-dir /tmp/stats --action-horizon 50 \\
        --delta-action-mask 6 -1 6 -1

For a config the output goes to `<assets_base_dir>/<config name>/<asset_id>/norm_stats.json`, the place its
trainer reads first; for a dataset root to `<assets_base_dir>/<asset_id>/`. Only parquet columns are read (no
video is decoded). The logic is `openpi.training.norm_stats`.
"""

import logging
import sys

import tyro

from openpi.shared import errors
from openpi.training import norm_stats


def main(args: norm_stats.Args) -> None:
    try:
        path = norm_stats.run(args)
    except errors.UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(path)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(tyro.cli(norm_stats.Args))
