"""Trainings in single-threaded child processes: they finish, one schedule reproduces another, failures name logs."""

import dataclasses
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "tests"))
import train_support

from openpi.models import params_io
from openpi.training import checkpoints
from openpi.training import parallel


def _params(config) -> dict:
    step = checkpoints.latest_step_dir(config.checkpoint_dir)
    return params_io.flatten(params_io.restore_params(step / "params"))


def test_single_thread_env_adds_the_flags_and_keeps_the_rest():
    env = parallel.single_thread_env({"XLA_FLAGS": "--xla_dump_to=/tmp/x", "PATH": "/bin"})
    assert env["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {parallel.SINGLE_THREAD_XLA_FLAGS}"
    assert env["PATH"] == "/bin" and env["OMP_NUM_THREADS"] == "1"


def test_two_processes_train_what_one_process_trains_and_a_failure_names_its_log(tmp_path, tiny_spm_model):
    workspace = train_support.make_workspace(tmp_path / "ws")
    configs = [
        train_support.debug_config(workspace, tiny_spm_model, exp_name=f"run{i}", num_train_steps=3, seed=i)
        for i in range(2)
    ]
    parallel.train_in_processes(configs, processes=2, echo=lambda _: None)
    side_by_side = [_params(c) for c in configs]
    assert all(parallel.log_path_for(c).exists() for c in configs)
    assert side_by_side[0].keys() == side_by_side[1].keys()
    assert any(not np.array_equal(side_by_side[0][k], side_by_side[1][k]) for k in side_by_side[0])  # other seed

    again = dataclasses.replace(configs[0], exp_name="run0_alone")
    parallel.train_in_processes([again], processes=1, echo=lambda _: None)
    alone = _params(again)
    for key, value in side_by_side[0].items():
        np.testing.assert_array_equal(alone[key], value, err_msg=key)

    broken = dataclasses.replace(
        configs[0], exp_name="broken", data=dataclasses.replace(configs[0].data, repo_id=str(tmp_path / "missing"))
    )
    with pytest.raises(parallel.ParallelTrainingError, match=r"broken \(log: .*broken\.log\)"):
        parallel.train_in_processes([broken], processes=1, echo=lambda _: None)
    assert "missing" in parallel.log_path_for(broken).read_text()
