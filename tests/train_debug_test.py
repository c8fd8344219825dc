"""debug_pi06 on a synthetic YAM dataset on CPU: the loss falls, and a stopped + resumed run equals an unstopped one."""

import dataclasses
import os
import pathlib
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import train_support

from openpi.shared import errors
from openpi.training import data_loader as _data_loader
from openpi.training import trainer as train


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    yield train_support.make_workspace(tmp_path_factory.mktemp("ws"))
    print("compilation cache entries:", len(list(pathlib.Path(jax.config.jax_compilation_cache_dir).iterdir())))
    jax.config.update("jax_compilation_cache_dir", None)


def _flat(params):
    return {
        "/".join(str(k.key) for k in p): np.asarray(x, np.float32)
        for p, x in jax.tree_util.tree_leaves_with_path(params)
    }


def test_debug_pi06_loss_falls_and_resume_matches(workspace, tiny_spm_model):
    steps = 8
    cfg = train_support.debug_config(workspace, tiny_spm_model, exp_name="full", num_train_steps=steps)
    trainer = train.policy_trainer(cfg)
    init_rng, _ = jax.random.split(jax.random.key(cfg.seed))
    initial = jax.jit(trainer.init)(init_rng).params

    final = train.train(cfg, progress=False)
    assert int(final.step) == steps

    # Loss on fixed batches with a fixed rng: lower after training.
    batch = next(iter(_data_loader.create_data_loader(dataclasses.replace(cfg, batch_size=8), num_batches=1)))
    obs, actions, _ = _data_loader.batch_to_model_inputs(batch)
    loss_fn = jax.jit(cfg.model.model().compute_loss)

    def eval_loss(params):
        return float(loss_fn(params, jax.random.key(0), obs, actions).mean())

    before, after = eval_loss(initial), eval_loss(final.params)
    assert after < 0.9 * before, (before, after)

    # Stop after 3 steps, resume to `steps`: same parameters as the unstopped run.
    stopped = train_support.debug_config(
        workspace, tiny_spm_model, exp_name="resumed", num_train_steps=3, overwrite=False
    )
    train.train(stopped, progress=False)
    with pytest.raises(errors.CheckpointError, match="--resume"):
        train.train(stopped, progress=False)
    resumed = train.train(dataclasses.replace(stopped, num_train_steps=steps, resume=True), progress=False)
    assert int(resumed.step) == steps
    a, b = _flat(final.params), _flat(resumed.params)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7, err_msg=key)
    run_dir = pathlib.Path(workspace["checkpoint_base_dir"]) / "debug_pi06" / "resumed"
    assert sorted(p.name for p in run_dir.iterdir() if p.name.isdigit()) == ["7"]  # max_to_keep=1 dropped "2"
    assert (run_dir / "7" / "assets" / "yam_synthetic" / "norm_stats.json").is_file()
