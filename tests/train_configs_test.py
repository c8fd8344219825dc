"""Every registered TrainConfig builds its whole train state (params, optimizer, EMA) under eval_shape."""

import jax
import jax.numpy as jnp

from openpi.models import params_io
from openpi.training import config as _config
from openpi.training import trainer as _trainer


def _key(cfg):
    return cfg.model, cfg.ema_decay, cfg.get_freeze_filter()


def test_every_config_builds_its_train_state_without_allocating():
    built = {}
    for name in _config.config_names():
        cfg = _config.get_config(name)
        key = _key(cfg)
        if key not in built:
            built[key] = jax.eval_shape(_trainer.policy_trainer(cfg).init, jax.random.key(0))
        state = built[key]
        assert isinstance(state.step, jax.ShapeDtypeStruct), name
        assert (state.ema_params is None) == (cfg.ema_decay is None), name
    full = built[_key(_config.get_config("pi06_yam_vial_30fps"))]
    lora = built[_key(_config.get_config("pi06_yam_vial_30fps_lora"))]
    opt = lambda s: sum(x.size for x in jax.tree.leaves(s.opt_state))  # noqa: E731
    params = lambda s: sum(x.size for x in jax.tree.leaves(s.params))  # noqa: E731
    assert opt(full) > 2 * params(full) - 100  # Adam moments for every weight
    assert opt(lora) < 0.35 * opt(full)  # none for the frozen LLM
    flat = params_io.flatten(lora.params)
    assert flat["PaliGemma/llm/layers/attn/q_einsum/w"].dtype == jnp.bfloat16
    assert flat["PaliGemma/llm/layers/attn/q_einsum/lora_a"].dtype == jnp.float32
