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

from openpi.shared import cli
from openpi.training import norm_stats


def _run(args: list[str]) -> None:
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        print("Configs (policy and value):")
        for name in norm_stats.config_names():
            print(f"  {name}")
        raise SystemExit(0)
    print(norm_stats.run(cli.parse(norm_stats.Args, args, description=__doc__)))


def main(argv: list[str] | None = None) -> None:
    cli.run(_run, sys.argv[1:] if argv is None else argv, name="compute_norm_stats", level=logging.INFO)


if __name__ == "__main__":
    main()
