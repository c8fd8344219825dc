"""Serve a policy to robots over websocket (openpi's protocol; openpi clients work unchanged).

    uv run scripts/serve_policy.py policy:checkpoint --policy.config=pi06_yam_vial_30fps_infer \\
        --policy.dir=checkpoints/pi06_yam_vial_30fps/my_run/29999 --port 8000
    uv run scripts/serve_policy.py policy:dummy --policy.config=debug_pi06

`--help` lists the options; the logic is `openpi.serving.serve_cli`, started through `openpi.sim.serve` (which hands
it the simulated envs' warm-up example, so a sim config's first request does not compile).
"""

from openpi.sim import serve

if __name__ == "__main__":
    serve.main()
