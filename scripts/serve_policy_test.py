import dataclasses
import socket

import pytest
import serve_policy


def test_cli_accepts_openpi_style_arguments():
    args = serve_policy.cli(
        [
            "policy:checkpoint",
            "--policy.config=pi06_yam_vial_30fps_infer",
            "--policy.dir=checkpoints/x/y/10",
            "--port",
            "9000",
            "--host",
            "0.0.0.0",
            "--api-key",
            "k",
            "--cfg-beta",
            "2.0",
        ]
    )
    assert args.policy == serve_policy.Checkpoint(config="pi06_yam_vial_30fps_infer", dir="checkpoints/x/y/10")
    assert (args.port, args.host, args.api_key, args.cfg_beta) == (9000, "0.0.0.0", "k", 2.0)


def test_cli_defaults_are_safe():
    args = serve_policy.cli(["policy:dummy"])
    assert args.policy == serve_policy.Dummy(config="debug_pi06")
    assert args.host == "127.0.0.1" and args.port == 8000 and args.api_key is None and args.cfg_beta is None


def test_unknown_config_is_one_clear_line(capsys):
    with pytest.raises(SystemExit) as info:
        serve_policy.main(serve_policy.cli(["policy:dummy", "--policy.config=pi06_yam_vial"]))
    message = str(info.value.code)
    assert message.startswith("error: No training config named 'pi06_yam_vial'") and "\n" not in message.strip()


def test_missing_checkpoint_is_one_clear_line(tmp_path):
    args = serve_policy.cli(["policy:checkpoint", "--policy.config=debug_pi06", f"--policy.dir={tmp_path / 'gone'}"])
    with pytest.raises(SystemExit, match="error: Checkpoint not found"):
        serve_policy.main(args)


def test_busy_port_fails_before_loading_anything():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        args = serve_policy.cli(["policy:checkpoint", "--policy.config=debug_pi06", "--policy.dir=/nonexistent"])
        with pytest.raises(SystemExit, match=f"port {port} on 127.0.0.1 is already in use"):
            serve_policy.main(dataclasses.replace(args, port=port))
