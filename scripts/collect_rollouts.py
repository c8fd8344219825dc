"""Stage 0 of RECAP in simulation: run a served policy (or the scripted expert) with operator corrections, record it.

    uv run scripts/collect_rollouts.py --env tabletop --episodes-per-task 20 --quality 1.0 \\
        --output-dir sim_output/data/demos
    uv run scripts/collect_rollouts.py --agent policy --port 8000 --adv-ind positive --seed 100 \\
        --output-dir sim_output/data/iter1

`--help` lists the options; the logic is `openpi.sim.collect_cli`.
"""

from openpi.sim import collect_cli

if __name__ == "__main__":
    collect_cli.main()
