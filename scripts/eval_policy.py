"""Closed-loop evaluation of a served policy in simulation: success per task with Wilson 95 % intervals.

    uv run scripts/eval_policy.py --port 8000 --adv-ind positive --output-dir sim_output/eval/recap
    uv run scripts/eval_policy.py --serve-config sim_pi06_infer \\
        --checkpoint-dir checkpoints/sim_pi06/run/1499 --cfg-beta 1.5 --output-dir sim_output/eval/cfg15

`--help` lists the options; the logic is `openpi.sim.eval_cli` (Python: `eval_cli.evaluate(**overrides)`).
"""

from openpi.sim import eval_cli

if __name__ == "__main__":
    eval_cli.main()
