"""Merge LeRobot datasets (v2.1 / v3.0) that share their features into one new dataset.

    uv run scripts/merge_datasets.py /data/day1 /data/day2 --output-dir /data/yam_all [--rescale-labels]

`--help` lists the options; the logic is `openpi.datasets.merge_cli`.
"""

from openpi.datasets import merge_cli

if __name__ == "__main__":
    merge_cli.main()
