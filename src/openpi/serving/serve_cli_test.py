import dataclasses
import socket

import pytest

from openpi.serving import serve_cli as serve_policy
from openpi.shared import errors


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


def test_unknown_config_suggests_the_nearest_name():
    with pytest.raises(errors.ConfigError, match="No training config named 'pi06_yam_vial'; did you mean"):
        serve_policy.cli(["policy:dummy", "--policy.config=pi06_yam_vial"])


def test_bad_flag_is_one_line_with_status_2(capsys):
    with pytest.raises(SystemExit) as info:
        serve_policy.main(["policy:dummy", "--prot=9000"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "ERROR" in err and "Unrecognized options: --prot=9000" in err and "\n" not in err


def test_missing_checkpoint_is_one_clear_line(tmp_path):
    args = serve_policy.cli(["policy:checkpoint", "--policy.config=debug_pi06", f"--policy.dir={tmp_path / 'gone'}"])
    with pytest.raises(errors.CheckpointError, match="Checkpoint not found"):
        serve_policy.serve(args)


def test_busy_port_fails_before_loading_anything():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        args = serve_policy.cli(["policy:checkpoint", "--policy.config=debug_pi06", "--policy.dir=/nonexistent"])
        with pytest.raises(errors.ConfigError, match=f"Port {port} on 127.0.0.1 is already in use"):
            serve_policy.serve(dataclasses.replace(args, port=port))
