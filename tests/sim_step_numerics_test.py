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


def _fixed_batch(model_config, batch_size: int = 32) -> dict:
    rng = np.random.default_rng(0)
    batch = model_config.fake_obs(batch_size).to_dict()
    batch["image"] = {k: rng.uniform(-1, 1, v.shape).astype(np.float32) for k, v in batch["image"].items()}
    batch["state"] = rng.normal(size=batch["state"].shape).astype(np.float32)
    shape = batch["tokenized_prompt"].shape
    batch["tokenized_prompt"] = rng.integers(0, model_config.vocab_size, shape).astype(np.int32)
    batch["tokenized_prompt_mask"] = np.arange(shape[1])[None, :] < rng.integers(10, shape[1], (shape[0], 1))
    batch["actions"] = rng.normal(size=(batch_size, model_config.action_horizon, model_config.action_dim))
    return jax.tree.map(jnp.asarray, batch)


def _one_step(config: _config.TrainConfig, batch: dict):
    trainer = _trainer.policy_trainer(config)
    rng = jax.random.key(0)
    state = jax.jit(trainer.init)(rng, None)
    new_state, info = jax.jit(trainer.step)(rng, state, batch)
    return jax.device_get(new_state.params), {k: float(v) for k, v in info.items()}


def test_the_fast_sim_step_gives_the_old_steps_loss_and_update(monkeypatch):
    fast = _config.get_config("sim_pi05")
    assert fast.model.unroll_layers
    batch = _fixed_batch(fast.model)
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
