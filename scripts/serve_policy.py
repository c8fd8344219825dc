"""Serve a policy to robots over websocket (openpi's protocol; openpi clients work unchanged).

    uv run scripts/serve_policy.py policy:checkpoint --policy.config=pi06_yam_vial_30fps_infer \\
        --policy.dir=checkpoints/pi06_yam_vial_30fps/my_run/29999 --port 8000
    uv run scripts/serve_policy.py policy:dummy --policy.config=debug_pi06

`--help` lists the options; the logic is `openpi.serving.serve_cli`.
"""

from openpi.serving import serve_cli

if __name__ == "__main__":
    serve_cli.main()
