import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openpi.models import gemma
from openpi.shared import errors


def test_variant_table():
    assert gemma.get_config("gemma_2b") == gemma.Config(2048, 18, 16384, 8, 1, 256)
    assert gemma.get_config("gemma_300m") == gemma.Config(1024, 18, 4096, 8, 1, 256)
    assert gemma.get_config("dummy") == gemma.Config(64, 4, 128, 8, 1, 16)
    assert gemma.get_config("gemma_2b_lora").lora("attn").rank == 16
    assert gemma.get_config("gemma_300m_lora").lora("ffn").alpha == 32.0
    with pytest.raises(errors.ConfigError, match="gemma_1b"):
        gemma.get_config("gemma_1b")


def test_rope_is_relative():
    q = jax.random.normal(jax.random.key(0), (1, 1, 1, 16))
    k = jax.random.normal(jax.random.key(1), (1, 1, 1, 16))

    def score(m, n):
        return jnp.sum(gemma.apply_rope(q, jnp.array([[m]])) * gemma.apply_rope(k, jnp.array([[n]])))

    np.testing.assert_allclose(score(3, 1), score(12, 10), rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(gemma.apply_rope(q, jnp.array([[7]]))), jnp.linalg.norm(q), rtol=1e-5)


def test_adaptive_norm_uses_scale_shift_gate():
    norm = gemma.RMSNorm(adaptive=True)
    x = jax.random.normal(jax.random.key(0), (2, 3, 4))
    cond = jax.random.normal(jax.random.key(1), (2, 5))
    params = norm.init(jax.random.key(2), x, cond)["params"]
    assert params["Dense_0"]["kernel"].shape == (5, 12) and not np.any(params["Dense_0"]["kernel"])
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape), params)
    out, gate = norm.apply({"params": params}, x, cond)
    mod = cond @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    scale, shift, g = mod[:, None, :4], mod[:, None, 4:8], mod[:, None, 8:]
    normed = x / jnp.sqrt(jnp.mean(x**2, axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(out, normed * (1 + scale) + shift, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gate, g, rtol=1e-6)


def test_kv_cache_decoding_equals_joint_pass():
    cfg = gemma.get_config("dummy")
    module = gemma.Module(configs=(cfg, cfg), embed_dtype="float32", use_adarms=(False, True), remat=False)
    b, p, s = 2, 6, 3
    prefix = jax.random.normal(jax.random.key(2), (b, p, 64))
    suffix = jax.random.normal(jax.random.key(3), (b, s, 64))
    cond = jax.random.normal(jax.random.key(4), (b, 64))
    prefix_valid = jnp.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], bool)
    valid = jnp.concatenate([prefix_valid, jnp.ones((b, s), bool)], axis=1)
    block = jnp.concatenate([jnp.zeros(p, int), jnp.array([1, 1, 1])])  # prefix block, then causal suffix
    cum = jnp.cumsum(block)
    mask = (cum[None, :] <= cum[:, None])[None] & valid[:, None, :] & valid[:, :, None]
    positions = jnp.cumsum(valid, axis=1) - 1
    # Initialising through __call__ alone skips the (257152 x 64) token table, which this test does not need.
    params = jax.jit(module.init)(jax.random.key(0), [prefix, suffix], positions, mask, [None, cond])["params"]
    assert "embedder" not in params
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), params)
    apply = jax.jit(module.apply)
    (_, joint), _ = apply({"params": params}, [prefix, suffix], positions, mask, [None, cond])

    (_, none_out), cache = apply({"params": params}, [prefix, None], positions[:, :p], mask[:, :p, :p], [None, cond])
    assert none_out is None and cache[0].shape == (4, b, p, 1, 16)
    (_, decoded), _ = apply(
        {"params": params}, [None, suffix], positions[:, p:], mask[:, p:, :], [None, cond], kv_cache=cache
    )
    np.testing.assert_allclose(decoded, joint, rtol=1e-5, atol=1e-5)


def _reference_softmax(logits, mask):
    """The formula masked_softmax replaced: Gemma's select, then jax.nn.softmax (autodiff backward)."""
    return jax.nn.softmax(jnp.where(mask, logits, gemma._BIG_NEG), axis=-1)


def test_masked_softmax_equals_the_select_then_softmax_forward_and_backward():
    logits = 3.0 * jax.random.normal(jax.random.key(0), (2, 1, 4, 6, 7))
    mask = jax.random.bernoulli(jax.random.key(1), 0.6, (2, 1, 1, 6, 7))
    mask = mask.at[0, 0, 0, 2, :].set(False)  # a fully masked (padding) row: uniform forward, zero gradient
    weights = jax.random.normal(jax.random.key(2), logits.shape)

    def loss(fn, x):
        return jnp.sum(fn(x, mask) * weights)

    np.testing.assert_allclose(gemma.masked_softmax(logits, mask), _reference_softmax(logits, mask), atol=1e-6)
    ours = jax.grad(lambda x: loss(gemma.masked_softmax, x))(logits)
    ref = jax.grad(lambda x: loss(_reference_softmax, x))(logits)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    np.testing.assert_allclose(gemma.masked_softmax(logits, mask)[0, 0, :, 2], 1 / 7, rtol=1e-6)
    assert not np.any(ours[0, 0, :, 2])
    assert not np.any(np.where(np.broadcast_to(mask, logits.shape), 0.0, ours))  # masked keys get no gradient
