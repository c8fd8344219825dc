"""Stage 1 of the RECAP loop: write a copy of your LeRobot dataset (v2.1 or v3.0) with the five RECAP columns.

    uv run scripts/add_recap_columns.py /data/yam_rollouts --output-dir /data/yam_rollouts_recap
    uv run scripts/add_recap_columns.py /data/yam_demos --output-dir /data/yam_demos_recap --demos --all-success

`--help` lists the options and more examples; the logic is `openpi.datasets.convert_cli`.
"""

from openpi.datasets import convert_cli

if __name__ == "__main__":
    convert_cli.main()
