"""A LoRA config starts from an openpi-layout params checkpoint (written here) and trains only what it may."""

import dataclasses
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import train_support

from openpi.models import params_io
from openpi.models import pi0_config
from openpi.shared import testing
from openpi.training import trainer as _trainer
from openpi.training import weight_loaders


def test_lora_from_openpi_checkpoint_trains_only_lora_in_the_llm(tmp_path, tiny_spm_model):
    base = pi0_config.Pi0Config(pi05=True, pistar=True, paligemma_variant="dummy", action_expert_variant="dummy")
    base_params = jax.device_get(jax.jit(base.init_params)(jax.random.key(7)))
    ckpt = testing.write_openpi_params_checkpoint(tmp_path / "base" / "params", base_params, nnx_state=True)

    workspace = train_support.make_workspace(tmp_path / "ws")
    lora_model = dataclasses.replace(base, paligemma_variant="dummy_lora", action_expert_variant="dummy_lora")
    cfg = train_support.debug_config(
        workspace,
        tiny_spm_model,
        exp_name="lora",
        model=lora_model,
        weight_loader=weight_loaders.CheckpointWeightLoader(str(ckpt)),
        ema_decay=None,
        num_train_steps=2,
    )
    state = _trainer.train(cfg, progress=False)

    before = params_io.flatten(base_params)
    after = {k: np.asarray(v) for k, v in params_io.flatten(jax.device_get(state.params)).items()}
    frozen = cfg.get_freeze_filter()
    lora_keys = [k for k in after if "lora" in k]
    assert lora_keys and all(k not in before for k in lora_keys)
    llm = [k for k in after if "/llm/" in k and "lora" not in k]
    assert llm and all(frozen(k) for k in llm)
    for key in llm:  # frozen: the checkpoint's values, stored in bf16
        assert after[key].dtype == jax.numpy.bfloat16, key
        np.testing.assert_array_equal(after[key], before[key].astype(jax.numpy.bfloat16), err_msg=key)
    assert any(not np.array_equal(after[k], np.zeros_like(after[k])) for k in lora_keys if "lora_b" in k)
    # Outside the LLM the checkpoint was loaded, then trained.
    assert not np.allclose(after["action_out_proj/kernel"], before["action_out_proj/kernel"])
    # No optimizer state for frozen weights.
    opt_sizes = sum(x.size for x in jax.tree.leaves(state.opt_state))
    trainable = sum(after[k].size for k in after if not frozen(k))
    assert opt_sizes < 2 * trainable + 100 < 2 * sum(v.size for v in after.values())
