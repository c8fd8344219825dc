"""Multi-device (FSDP over 4 host devices) and multi-process (two processes joined by jax.distributed) training."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import train_support

from openpi.models import params_io
from openpi.training import config as _config

WORKER = pathlib.Path(__file__).with_name("train_worker.py")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return train_support.make_workspace(tmp_path_factory.mktemp("ws"))


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update({"JAX_PLATFORMS": "cpu", **extra})
    return env


def _result(out: str) -> dict:
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _spec(workspace, spm, **overrides) -> str:
    return json.dumps({"workspace": workspace, "spm": str(spm), "overrides": overrides})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp_over_four_devices_shards_params(workspace, tiny_spm_model):
    spec = _spec(workspace, tiny_spm_model, exp_name="fsdp", num_train_steps=2, batch_size=4, fsdp_devices=2)
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, str(WORKER), spec], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = _result(proc.stdout)
    assert result["device_count"] == 4 and result["step"] == 2
    assert "fsdp" in result["embedding_spec"]
    shape, shard = result["embedding_shape"], result["embedding_shard_shape"]
    assert np.prod(shard) * 2 == np.prod(shape)  # each device holds half of the embedding
    assert result["opt_state_sharded"]


# About 50 s on 2 cores: part of the default suite because multi-host training is a headline feature.
def test_two_processes_train_together_and_write_one_checkpoint(workspace, tiny_spm_model):
    port = _free_port()
    spec = _spec(workspace, tiny_spm_model, exp_name="two_hosts", num_train_steps=3, batch_size=4)
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), spec],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)),
        )
        for i in range(2)
    ]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-4000:]
        outs.append(_result(stdout))
    assert {r["process_index"] for r in outs} == {0, 1} and all(r["process_count"] == 2 for r in outs)
    assert not set(outs[0]["frames"]) & set(outs[1]["frames"])  # each host read its own shard
    assert outs[0]["out_proj_sum"] == outs[1]["out_proj_sum"]  # and they trained one model
    run_dir = pathlib.Path(workspace["checkpoint_base_dir"]) / "debug_pi06" / "two_hosts"
    steps = sorted(p.name for p in run_dir.iterdir() if p.name.isdigit())
    assert steps == ["2"]
    params = params_io.restore_params(run_dir / "2" / "params", restore_type=np.ndarray)
    params_io.check_tree_matches(_config.get_config("debug_pi06").model.params_shape(), params)
    # params/ holds the EMA weights (debug_pi06 keeps an EMA), identical on both processes.
    assert outs[0]["served_out_proj_sum"] == outs[1]["served_out_proj_sum"]
    np.testing.assert_allclose(params["action_out_proj"]["kernel"].sum(), outs[0]["served_out_proj_sum"], rtol=1e-5)
