"""Write the synthetic YAM RECAP dataset that the demo trains on (see `openpi.datasets.synthetic`).

    uv run scripts/make_demo_dataset.py --out /tmp/yam_demo [--num-episodes 48] [--version v2.1]

`--help` lists the options; the logic is `openpi.datasets.synthetic_cli`.
"""

from openpi.datasets import synthetic_cli

if __name__ == "__main__":
    synthetic_cli.main()
