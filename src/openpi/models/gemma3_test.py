import dataclasses
import math

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from openpi.models import gemma3
from openpi.shared import errors


def _init(cfg, batch=2, seq=24, seed=0):
    model = gemma3.Gemma3(cfg)
    tokens = jax.random.randint(jax.random.key(seed), (batch, seq), 0, cfg.vocab_size)
    mask = jnp.ones((batch, seq), bool)
    params = model.init(jax.random.key(1), tokens, mask, method=gemma3.Gemma3.lm)["params"]
    return model, params, tokens, mask


def test_270m_param_tree_and_count():
    cfg = gemma3.get_config("gemma3_270m")
    model = gemma3.Gemma3(cfg)
    tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    mask = jax.ShapeDtypeStruct((1, 8), jnp.bool_)
    shapes = jax.eval_shape(lambda t, m: model.init(jax.random.key(0), t, m, method=gemma3.Gemma3.lm), tokens, mask)
    flat = {k: v.shape for k, v in traverse_util.flatten_dict(shapes["params"], sep="/").items()}
    # Names and shapes of the public Gemma3-270M checkpoint (nested layout).
    assert flat["embedder/input_embedding"] == (262144, 640)
    assert flat["final_norm/scale"] == (640,)
    assert flat["layer_0/attn/q_einsum/w"] == (4, 640, 256)
    assert flat["layer_0/attn/kv_einsum/w"] == (2, 1, 640, 256)
    assert flat["layer_0/attn/attn_vec_einsum/w"] == (4, 256, 640)
    assert flat["layer_0/attn/_query_norm/scale"] == (256,)
    assert flat["layer_0/attn/_key_norm/scale"] == (256,)
    assert flat["layer_17/mlp/gating_einsum"] == (2, 2048, 640)
    assert flat["layer_17/mlp/linear"] == (2048, 640)
    for norm in ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm"):
        assert flat[f"layer_5/{norm}/scale"] == (640,)
    assert len([k for k in flat if k.startswith("layer_")]) == 18 * 11
    assert sum(math.prod(s) for s in flat.values()) == 268_098_176
    assert [i for i in range(18) if cfg.is_global(i)] == [5, 11, 17]


def _reference_forward(cfg, params, tokens):
    """Plain numpy Gemma3 forward (causal, unbatched loops), written independently of the module."""

    def rms(x, scale):
        return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + 1e-6) * (1 + scale)

    def rope(x, pos, base):
        half = x.shape[-1] // 2
        inv = base ** (-2 * np.arange(half) / x.shape[-1])
        ang = pos[:, None, None] * inv  # [T, 1, half]
        a, b = x[..., :half], x[..., half:]
        return np.concatenate([a * np.cos(ang) - b * np.sin(ang), b * np.cos(ang) + a * np.sin(ang)], -1)

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = p["embedder"]["input_embedding"][tokens] * np.sqrt(cfg.width)  # [T, D]
    t = len(tokens)
    pos = np.arange(t, dtype=np.float64)
    for i in range(cfg.depth):
        lp = p[f"layer_{i}"]
        glob = cfg.is_global(i)
        h = rms(x, lp["pre_attention_norm"]["scale"])
        q = np.einsum("td,ndh->tnh", h, lp["attn"]["q_einsum"]["w"])
        k = np.einsum("td,kdh->tkh", h, lp["attn"]["kv_einsum"]["w"][0])
        v = np.einsum("td,kdh->tkh", h, lp["attn"]["kv_einsum"]["w"][1])
        q = rms(q, lp["attn"]["_query_norm"]["scale"])
        k = rms(k, lp["attn"]["_key_norm"]["scale"])
        base = cfg.global_rope_base if glob else cfg.local_rope_base
        q = rope(q, pos, base) / np.sqrt(cfg.head_dim)
        k = rope(k, pos, base)
        out = np.zeros((t, cfg.num_heads, cfg.head_dim))
        for n in range(cfg.num_heads):
            kv = n // (cfg.num_heads // cfg.num_kv_heads)
            for a in range(t):
                allowed = [b for b in range(a + 1) if glob or a - b < cfg.sliding_window]
                logits = np.array([q[a, n] @ k[b, kv] for b in allowed])
                w = np.exp(logits - logits.max())
                w /= w.sum()
                out[a, n] = sum(wi * v[b, kv] for wi, b in zip(w, allowed, strict=True))
        h = np.einsum("tnh,nhd->td", out, lp["attn"]["attn_vec_einsum"]["w"])
        x = x + rms(h, lp["post_attention_norm"]["scale"])
        h = rms(x, lp["pre_ffw_norm"]["scale"])
        gate = np.einsum("td,nhd->tnh", h, lp["mlp"]["gating_einsum"])
        h = (gelu(gate[:, 0]) * gate[:, 1]) @ lp["mlp"]["linear"]
        x = x + rms(h, lp["post_ffw_norm"]["scale"])
    return rms(x, p["final_norm"]["scale"])


def test_forward_matches_numpy_reference():
    cfg = dataclasses.replace(gemma3.get_config("dummy"), sliding_window=5, vocab_size=64)
    model, params, tokens, mask = _init(cfg, batch=1, seq=12)
    # Randomise the norm scales so that a norm applied in the wrong place cannot go unnoticed.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    params = jax.tree.unflatten(
        treedef, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )
    positions = jnp.arange(12)[None]
    hidden = model.apply(
        {"params": params},
        model.apply({"params": params}, tokens, method=model.embed),
        positions,
        gemma3.causal_mask(mask),
    )
    ref = _reference_forward(cfg, params, np.asarray(tokens[0]))
    np.testing.assert_allclose(np.asarray(hidden[0]), ref, rtol=2e-3, atol=2e-3)


def test_sliding_window_limits_local_layers():
    # All layers local: with window w and depth d, position t only sees tokens t-(w-1)*d .. t.
    cfg = dataclasses.replace(gemma3.get_config("dummy"), global_every=1000, sliding_window=3, depth=2, vocab_size=64)
    model, params, tokens, mask = _init(cfg, batch=1, seq=16)
    out = model.apply({"params": params}, tokens, mask, method=model.lm)
    changed = tokens.at[0, 0].set((tokens[0, 0] + 1) % cfg.vocab_size)
    out2 = model.apply({"params": params}, changed, mask, method=model.lm)
    diff = np.abs(np.asarray(out2 - out)).max(-1)[0]
    assert diff[:5].max() > 1e-4  # reachable positions change
    np.testing.assert_array_equal(diff[5:], 0.0)  # beyond the receptive field nothing changes
    # With one global layer, the change reaches the end.
    cfg_g = dataclasses.replace(cfg, global_every=2)
    model_g, params_g, _, _ = _init(cfg_g, batch=1, seq=16)
    d = model_g.apply({"params": params_g}, changed, mask, method=model_g.lm) - model_g.apply(
        {"params": params_g}, tokens, mask, method=model_g.lm
    )
    assert np.abs(np.asarray(d))[0, -1].max() > 1e-4


def _to_released_flat_layout(params):
    """Nested module tree -> the layout of the released checkpoints ('transformer/<path>': {param: array})."""
    flat = {}
    for path, leaf in traverse_util.flatten_dict(params).items():
        *module, name = path
        if module and module[-1] == "mlp":  # bare arrays in the module, {"w": ...} in the release
            module, name = [*module, name], "w"
        flat.setdefault("/".join(["transformer", *module]), {})[name] = np.asarray(leaf)
    return flat


def test_load_released_flat_and_nested_layouts(tmp_path):
    cfg = gemma3.get_config("dummy")
    model, params, tokens, mask = _init(cfg, seq=8)
    flat = _to_released_flat_layout(params)
    assert "transformer/layer_0/mlp/gating_einsum" in flat and set(flat["transformer/layer_0/mlp/gating_einsum"]) == {
        "w"
    }
    # A multimodal release also carries the vision tower; it must be ignored.
    flat["SigLiPFromPatches_0/siglip_encoder/embedding"] = {"kernel": np.zeros((2, 2), np.float32)}
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "flat", flat)
    ckpt.save(tmp_path / "nested", {"transformer": jax.tree.map(np.asarray, params)})
    ckpt.wait_until_finished()

    expected = jax.eval_shape(lambda: params)
    for name in ("flat", "nested"):
        loaded = gemma3.load_gemma3_params(tmp_path / name, expected=expected, dtype=np.float32)
        jax.tree.map(np.testing.assert_array_equal, loaded, jax.tree.map(np.asarray, params))
        logits = model.apply({"params": loaded}, tokens, mask, method=model.lm)
        np.testing.assert_allclose(logits, model.apply({"params": params}, tokens, mask, method=model.lm), atol=1e-5)

    bf16 = gemma3.load_gemma3_params(tmp_path / "flat", dtype=jnp.bfloat16)
    assert bf16["layer_0"]["mlp"]["linear"].dtype == jnp.bfloat16


def _to_stacked_layout(flat, period: int):
    """The released flat layout -> the `gemma` library's stacked one: layers of one attention type (layer % period)
    stacked on a leading axis, `transformer/stacked_layers/attention_type_<layer % period>/<path>`."""
    out, slices = {}, {}
    for key, params in flat.items():
        if not key.startswith("transformer/layer_"):
            out[key] = params
            continue
        layer, _, suffix = key.removeprefix("transformer/layer_").partition("/")
        kind, index = int(layer) % period, int(layer) // period
        slices.setdefault(f"transformer/stacked_layers/attention_type_{kind}/{suffix}", {})[index] = params
    for key, by_index in slices.items():
        assert sorted(by_index) == list(range(len(by_index)))
        out[key] = {name: np.stack([by_index[i][name] for i in range(len(by_index))]) for name in by_index[0]}
    return out


def test_load_the_gemma_librarys_stacked_layout(tmp_path):
    """Issue 31.3: the reference loader also reads checkpoints whose layers are stacked per attention type; with 8
    layers and a period of 6, types 0 and 1 hold two layers and the others one (as Gemma3-1B's 26 layers do)."""
    cfg = dataclasses.replace(gemma3.get_config("dummy"), depth=8)
    model, params, tokens, mask = _init(cfg, seq=8)
    stacked = _to_stacked_layout(_to_released_flat_layout(params), cfg.global_every)
    assert "transformer/stacked_layers/attention_type_1/mlp/linear" in stacked
    assert stacked["transformer/stacked_layers/attention_type_1/attn/q_einsum"]["w"].shape[0] == 2
    assert stacked["transformer/stacked_layers/attention_type_5/attn/q_einsum"]["w"].shape[0] == 1
    assert not any("layer_" in k.replace("stacked_layers", "") for k in stacked)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "stacked", stacked)
    ckpt.wait_until_finished()

    loaded = gemma3.load_gemma3_params(tmp_path / "stacked", expected=jax.eval_shape(lambda: params))
    jax.tree.map(np.testing.assert_array_equal, loaded, jax.tree.map(np.asarray, params))
    logits = model.apply({"params": loaded}, tokens, mask, method=model.lm)
    np.testing.assert_allclose(logits, model.apply({"params": params}, tokens, mask, method=model.lm), atol=1e-5)

    without_type_2 = {k: v for k, v in stacked.items() if "attention_type_2/" not in k}
    with pytest.raises(errors.CheckpointError, match=r"lacks types \[2\]"):
        gemma3.unstack_layers(without_type_2)
    both = {**stacked, "transformer/layer_7/attn/q_einsum": {"w": np.zeros((1,))}}
    with pytest.raises(errors.CheckpointError, match="transformer/layer_7/attn/q_einsum both stacked and unstacked"):
        gemma3.unstack_layers(both)


def test_load_errors(tmp_path):
    with pytest.raises(errors.CheckpointError, match="not found"):
        gemma3.load_gemma3_params(tmp_path / "missing")
    cfg = gemma3.get_config("dummy")
    _, params, _, _ = _init(cfg, seq=4)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "ck", _to_released_flat_layout(params))
    ckpt.wait_until_finished()
    wrong = jax.eval_shape(
        lambda: gemma3.Gemma3(dataclasses.replace(cfg, width=32)).init(
            jax.random.key(0), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), bool), method=gemma3.Gemma3.lm
        )["params"]
    )
    with pytest.raises(errors.CheckpointError, match="shape"):
        gemma3.load_gemma3_params(tmp_path / "ck", expected=wrong)
    with pytest.raises(errors.ConfigError, match="Unknown Gemma3 variant"):
        gemma3.get_config("gemma3_1b_typo")
