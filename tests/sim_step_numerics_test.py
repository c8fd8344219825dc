"""The faster toy train step (unrolled layer scan, lean masked softmax) computes what the old step computed.

One `sim_pi05` training step at batch 32 on a fixed batch, run twice: as configured, and with the layer scan
rolled and the attention softmax swapped back to the select + `jax.nn.softmax` it replaced. Loss, gradient norm
and every updated parameter agree to float32 noise (benchmarks/sim_step_bench.py measures the speed).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from openpi.models import gemma
from openpi.training import config as _config
from openpi.training import trainer as _trainer
from openpi.training import utils as _utils


def _one_step(config: _config.TrainConfig, batch: dict):
    trainer = _trainer.policy_trainer(config)
    rng = jax.random.key(0)
    state = jax.jit(trainer.init)(rng, None)
    new_state, info = jax.jit(trainer.step)(rng, state, batch)
    return jax.device_get(new_state.params), {k: float(v) for k, v in info.items()}


def test_the_fast_sim_step_gives_the_old_steps_loss_and_update(monkeypatch):
    fast = _config.get_config("sim_pi05")
    assert fast.model.unroll_layers
    batch = _utils.random_batch(fast.model, 32)
    fast_params, fast_info = _one_step(fast, batch)

    old = dataclasses.replace(fast, model=dataclasses.replace(fast.model, unroll_layers=False))
    monkeypatch.setattr(gemma, "masked_softmax", lambda x, m: jax.nn.softmax(jnp.where(m, x, gemma._BIG_NEG), -1))
    old_params, old_info = _one_step(old, batch)

    np.testing.assert_allclose(fast_info["loss"], old_info["loss"], rtol=1e-5)
    np.testing.assert_allclose(fast_info["grad_norm"], old_info["grad_norm"], rtol=1e-4)
    flat_fast, flat_old = jax.tree.leaves_with_path(fast_params), jax.tree.leaves(old_params)
    assert len(flat_fast) == len(flat_old)
    for (path, a), b in zip(flat_fast, flat_old, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
