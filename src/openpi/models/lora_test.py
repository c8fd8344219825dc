import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openpi.models import lora


def test_lora_equations():
    cfg = lora.LoRAConfig(rank=4)
    assert lora.lora_equations("BTD,NDH->BTNH", "NDH", cfg) == ("BTD,NDL->BTNL", "BTNL,NLH->BTNH")
    assert lora.lora_equations("BTNH,NHD->BTD", "NHD", cfg) == ("BTNH,NHL->BTL", "BTL,NLD->BTD")
    with pytest.raises(ValueError, match="already"):
        lora.lora_equations("BLD,NDH->BLNH", "NDH", cfg)


def test_einsum_lora_equals_merged_weight():
    cfg = lora.LoRAConfig(rank=2, alpha=4.0)
    module = lora.Einsum(shape=(3, 5, 4), init_fn=jax.nn.initializers.normal(1.0), lora_config=cfg)
    x = jax.random.normal(jax.random.key(0), (2, 6, 5))
    params = module.init(jax.random.key(1), "BTD,NDH->BTNH", x)["params"]
    assert params["lora_a"].shape == (3, 5, 2) and params["lora_b"].shape == (3, 2, 4)
    out = module.apply({"params": params}, "BTD,NDH->BTNH", x)
    merged = params["w"] + cfg.scaling * jnp.einsum("NDL,NLH->NDH", params["lora_a"], params["lora_b"])
    np.testing.assert_allclose(out, jnp.einsum("BTD,NDH->BTNH", x, merged), rtol=1e-5, atol=1e-5)
    assert cfg.scaling == 2.0 and lora.LoRAConfig(rank=4, alpha=4.0, rslora=True).scaling == 2.0


def test_feed_forward_lora_shapes_and_math():
    cfg = lora.LoRAConfig(rank=3, alpha=3.0, init_std=0.3)
    module = lora.FeedForward(features=8, hidden_dim=16, lora_config=cfg)
    x = jax.random.normal(jax.random.key(0), (2, 4, 8))
    p = module.init(jax.random.key(1), x)["params"]
    assert {k: v.shape for k, v in p.items()} == {
        "gating_einsum": (2, 8, 16),
        "linear": (16, 8),
        "gating_einsum_lora_a": (2, 8, 3),
        "gating_einsum_lora_b": (2, 3, 16),
        "linear_lora_a": (16, 3),
        "linear_lora_b": (3, 8),
    }
    gate_w = p["gating_einsum"] + jnp.einsum("kdl,klh->kdh", p["gating_einsum_lora_a"], p["gating_einsum_lora_b"])
    lin_w = p["linear"] + p["linear_lora_a"] @ p["linear_lora_b"]
    expected = (jax.nn.gelu(x @ gate_w[0]) * (x @ gate_w[1])) @ lin_w
    np.testing.assert_allclose(module.apply({"params": p}, x), expected, rtol=1e-4, atol=1e-5)
    plain = lora.FeedForward(features=8, hidden_dim=16).init(jax.random.key(1), x)["params"]
    assert set(plain) == {"gating_einsum", "linear"}
