"""Openpi's two-expert Gemma: one transformer whose every attention layer is shared by two token streams.

The first expert (PaliGemma's Gemma 2B) reads images and prompt, the second (the action expert, Gemma 300M) reads
the action tokens. In each layer both streams are projected with their own weights, attend jointly over the
concatenated sequence, and go through their own FFN. Weight names of the second expert carry the suffix `_1`, so
the first expert loads directly from a PaliGemma checkpoint and the tree matches openpi's checkpoints 1:1.

Layers are scanned (`nn.scan`, optionally unrolled), so every layer weight has a leading depth axis. pi0.5
conditions the action expert on the flow-matching time through adaptive RMSNorm: the norm's `Dense_0`
(zero-initialised) maps the condition to scale, shift and a gate on the residual.

Axis names in einsums: B batch, T query length, S key length, N query heads, K kv heads, G query heads per kv
head, H head dim, D model width.
"""

from collections.abc import Sequence
import dataclasses
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from openpi.models import lora
from openpi.shared import errors

PALIGEMMA_VOCAB_SIZE = 257_152
# Masked logits get this value (as Gemma); finite so a fully masked row (padding) yields a uniform softmax, not NaN.
_BIG_NEG = -2.3819763e38

Variant = Literal["dummy", "dummy_lora", "gemma_300m", "gemma_300m_lora", "gemma_2b", "gemma_2b_lora"]

# (KV cache keys, KV cache values), each [depth, batch, seq, kv_heads, head_dim].
KVCache = tuple[jax.Array, jax.Array]


@dataclasses.dataclass(frozen=True)
class Config:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    # LoRA per weight family: "attn" and/or "ffn".
    lora_configs: tuple[tuple[str, lora.LoRAConfig], ...] = ()

    def lora(self, family: str) -> lora.LoRAConfig | None:
        return dict(self.lora_configs).get(family)


def _with_lora(config: Config, rank: int) -> Config:
    adapter = lora.LoRAConfig(rank=rank, alpha=float(rank))
    return dataclasses.replace(config, lora_configs=(("attn", adapter), ("ffn", adapter)))


_BASE = {
    "dummy": Config(width=64, depth=4, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
    "gemma_300m": Config(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256),
    "gemma_2b": Config(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256),
}
_VARIANTS: dict[str, Config] = {
    **_BASE,
    # Not in openpi: a LoRA twin of the dummy so LoRA training can be exercised at toy size.
    "dummy_lora": _with_lora(_BASE["dummy"], rank=4),
    "gemma_300m_lora": _with_lora(_BASE["gemma_300m"], rank=32),
    "gemma_2b_lora": _with_lora(_BASE["gemma_2b"], rank=16),
}


def get_config(variant: str) -> Config:
    """The architecture of a named Gemma variant (openpi's table plus `dummy_lora`)."""
    if variant not in _VARIANTS:
        raise errors.ConfigError(f"Unknown Gemma variant {variant!r}; choose one of {sorted(_VARIANTS)}.")
    return _VARIANTS[variant]


def _name(base: str, expert: int) -> str:
    # Expert 0 keeps the plain PaliGemma names so its weights load from a PaliGemma checkpoint.
    return base if expert == 0 else f"{base}_{expert}"


class RMSNorm(nn.Module):
    """RMSNorm with (1 + scale); with `adaptive`, scale/shift/gate come from a zero-initialised Dense on `cond`.

    Returns (normed, gate) where gate is None for the plain norm.
    """

    adaptive: bool = False

    @nn.compact
    def __call__(self, x, cond=None):
        dtype = x.dtype
        var = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
        normed = x.astype(jnp.float32) * jax.lax.rsqrt(var + 1e-6)
        if not self.adaptive:
            scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],))
            return (normed * (1 + scale)).astype(dtype), None
        if cond is None:
            raise ValueError("An adaptive RMSNorm needs a condition (the pi0.5 time embedding); got None.")
        modulation = nn.Dense(3 * x.shape[-1], kernel_init=nn.initializers.zeros, dtype=dtype)(cond)
        scale, shift, gate = jnp.split(modulation[:, None, :], 3, axis=-1)
        normed = normed * (1 + scale.astype(jnp.float32)) + shift.astype(jnp.float32)
        return normed.astype(dtype), gate


@jax.custom_vjp
def masked_softmax(logits, mask):
    """Softmax over the last axis of `where(mask, logits, _BIG_NEG)` (Gemma's masking), with a lean backward.

    Same values as `jax.nn.softmax(jnp.where(...))`; the gradient is the same formula, p * (g - sum(g * p)). What
    differs is what the backward keeps: only the probabilities and one flag per query row, not the broadcast
    reciprocal of the normaliser nor a select over the whole [B, K, G, T, S] gradient. At toy sizes on CPU the
    attention tensors dominate the step's memory traffic, so this cuts ~10 % of a `sim_pi05` train step.

    A masked key gets probability exactly 0 (exp underflows) and hence gradient 0, as the select would give; a
    fully masked query row (padding) gets the uniform softmax forward and a zero gradient, also as before.
    """
    return _masked_softmax_fwd(logits, mask)[0]


def _masked_softmax_fwd(logits, mask):
    x = jnp.where(mask, logits, _BIG_NEG)
    e = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
    probs = e / jnp.sum(e, axis=-1, keepdims=True)
    return probs, (probs, jnp.any(mask, axis=-1, keepdims=True))


def _masked_softmax_bwd(residuals, g):
    probs, row_has_keys = residuals
    grad = probs * (g - jnp.sum(g * probs, axis=-1, keepdims=True))
    return jnp.where(row_has_keys, grad, 0.0), None


masked_softmax.defvjp(_masked_softmax_fwd, _masked_softmax_bwd)


def apply_rope(x, positions, max_wavelength: float = 10_000.0):
    """Rotary position embedding of x [B, T, N, H] at integer positions [B, T] (computed in float32)."""
    half = x.shape[-1] // 2
    timescale = max_wavelength ** ((2.0 / x.shape[-1]) * jnp.arange(half, dtype=jnp.float32))
    radians = positions[..., None].astype(jnp.float32) / timescale  # [B, T, H/2]
    sin, cos = jnp.sin(radians)[..., None, :], jnp.cos(radians)[..., None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class Attention(nn.Module):
    """Joint attention over the concatenated streams; each stream has its own projections."""

    configs: Sequence[Config]

    @nn.compact
    def __call__(self, xs, positions, attn_mask, kv_cache):
        first = self.configs[0]
        for c in self.configs:
            if (c.num_heads, c.num_kv_heads, c.head_dim) != (first.num_heads, first.num_kv_heads, first.head_dim):
                raise ValueError("All experts must share num_heads, num_kv_heads and head_dim to attend jointly.")
        dtype = next(x.dtype for x in xs if x is not None)

        qs, ks, vs = [], [], []
        for i, (x, c) in enumerate(zip(xs, self.configs, strict=True)):
            if x is None:
                continue
            if c.num_kv_heads == c.num_heads:
                qkv = lora.Einsum(
                    shape=(3, c.num_heads, c.width, c.head_dim),
                    init_fn=nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0, 1)),
                    lora_config=c.lora("attn"),
                    name=_name("qkv_einsum", i),
                )("BSD,3KDH->3BSKH", x)
                q, k, v = qkv[0], qkv[1], qkv[2]
            else:
                q = lora.Einsum(
                    shape=(c.num_heads, c.width, c.head_dim),
                    init_fn=nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,)),
                    lora_config=c.lora("attn"),
                    name=_name("q_einsum", i),
                )("BTD,NDH->BTNH", x)
                k, v = lora.Einsum(
                    shape=(2, c.num_kv_heads, c.width, c.head_dim),
                    init_fn=nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0, 1)),
                    lora_config=c.lora("attn"),
                    name=_name("kv_einsum", i),
                )("BSD,2KDH->2BSKH", x)
            qs.append(q)
            ks.append(k)
            vs.append(v)

        q = apply_rope(jnp.concatenate(qs, axis=1), positions) * jnp.asarray(first.head_dim**-0.5, dtype)
        k = apply_rope(jnp.concatenate(ks, axis=1), positions)
        v = jnp.concatenate(vs, axis=1)
        if kv_cache is not None:
            k = jnp.concatenate([kv_cache[0].astype(dtype), k], axis=1)
            v = jnp.concatenate([kv_cache[1].astype(dtype), v], axis=1)

        batch, q_len = q.shape[:2]
        if attn_mask.shape != (batch, 1, q_len, k.shape[1]):
            raise ValueError(f"Attention mask has shape {attn_mask.shape}, expected {(batch, 1, q_len, k.shape[1])}.")
        q = q.reshape(batch, q_len, first.num_kv_heads, first.num_heads // first.num_kv_heads, first.head_dim)
        logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, k, preferred_element_type=jnp.float32)
        probs = masked_softmax(logits, attn_mask[:, :, None, :, :]).astype(dtype)
        encoded = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v).reshape(batch, q_len, first.num_heads, first.head_dim)

        outs, start = [], 0
        for i, (x, c) in enumerate(zip(xs, self.configs, strict=True)):
            if x is None:
                outs.append(None)
                continue
            end = start + x.shape[1]
            outs.append(
                lora.Einsum(
                    shape=(c.num_heads, c.head_dim, c.width),
                    init_fn=nn.initializers.lecun_normal(in_axis=(-3, -2), out_axis=-1),
                    lora_config=c.lora("attn"),
                    name=_name("attn_vec_einsum", i),
                )("BTNH,NHD->BTD", encoded[:, start:end])
            )
            start = end
        return outs, (k, v)


def _gated_residual(x, y, gate):
    return x + y if gate is None else x + y * gate


class Block(nn.Module):
    """One transformer layer for all streams; a stream given as None is skipped (its weights are not read)."""

    configs: Sequence[Config]
    use_adarms: Sequence[bool]

    @nn.compact
    def __call__(self, xs, kv_cache, positions, attn_mask, adarms_cond):
        normed, gates = [], []
        for i, x in enumerate(xs):
            if x is None:
                normed.append(None)
                gates.append(None)
                continue
            y, gate = RMSNorm(adaptive=self.use_adarms[i], name=_name("pre_attention_norm", i))(x, adarms_cond[i])
            normed.append(y)
            gates.append(gate)
        attn_out, kv_cache = Attention(self.configs, name="attn")(normed, positions, attn_mask, kv_cache)
        xs = [None if x is None else _gated_residual(x, y, g) for x, y, g in zip(xs, attn_out, gates, strict=True)]

        out = []
        for i, (x, c) in enumerate(zip(xs, self.configs, strict=True)):
            if x is None:
                out.append(None)
                continue
            y, gate = RMSNorm(adaptive=self.use_adarms[i], name=_name("pre_ffw_norm", i))(x, adarms_cond[i])
            y = lora.FeedForward(c.width, c.mlp_dim, lora_config=c.lora("ffn"), name=_name("mlp", i))(y)
            out.append(_gated_residual(x, y, gate))
        return out, kv_cache


class Module(nn.Module):
    """The multi-expert Gemma. Call with one embedded sequence (or None) per expert.

    `__call__` returns (per-expert outputs after the final norm, KV cache of this call's keys/values including any
    cache passed in). To decode, run the prefix once with the suffix stream set to None, then run only the suffix
    with `kv_cache=` the returned cache and a mask over [cache + suffix].
    """

    configs: Sequence[Config]
    embed_dtype: str = "float32"
    # Per expert: whether its norms are adaptive (pi0.5: (False, True)).
    use_adarms: Sequence[bool] = (False, False)
    # Rematerialise each layer in the backward pass (saves activation memory at full size).
    remat: bool = True
    # Unroll the layer scan (same parameters, same values). At toy sizes on CPU a rolled scan's backward spends
    # most of its time slicing and stacking per-layer residuals; unrolled, XLA fuses across layers.
    unroll_layers: bool = False
    # Rows of the token embedding: PaliGemma's 257,152 (openpi), fewer for toy tokenizers.
    vocab_size: int = PALIGEMMA_VOCAB_SIZE

    def setup(self):
        if len({c.depth for c in self.configs}) != 1:
            raise ValueError("All experts must have the same depth.")
        self.embedder = Embedder(self.vocab_size, self.configs[0].width, name="embedder")
        block = Block
        if self.remat:
            block = nn.remat(Block, prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)
        self.layers = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
            length=self.configs[0].depth,
            unroll=self.configs[0].depth if self.unroll_layers else 1,
        )(configs=tuple(self.configs), use_adarms=tuple(self.use_adarms))
        self.final_norms = [
            RMSNorm(adaptive=self.use_adarms[i], name=_name("final_norm", i)) for i in range(len(self.configs))
        ]

    def embed(self, tokens):
        """Token ids [B, T] -> embeddings [B, T, D] (scaled by sqrt(D)) in the compute dtype."""
        return self.embedder.encode(tokens).astype(self.embed_dtype)

    def __call__(self, embedded, positions, mask, adarms_cond=None, *, kv_cache: KVCache | None = None):
        if adarms_cond is None:
            adarms_cond = [None] * len(self.configs)
        embedded = [None if e is None else e.astype(self.embed_dtype) for e in embedded]
        adarms_cond = [None if c is None else c.astype(self.embed_dtype) for c in adarms_cond]
        mask = jnp.asarray(mask)[:, None, :, :]
        embedded, kv_cache = self.layers(embedded, kv_cache, positions, mask, adarms_cond)
        outs = [
            None if e is None else norm(e, cond)[0]
            for norm, e, cond in zip(self.final_norms, embedded, adarms_cond, strict=True)
        ]
        return outs, kv_cache

    def init_all(self, batch_size: int = 1):
        """Touches every weight once (linen creates params lazily on first use)."""
        self.embed(jnp.zeros((batch_size, 1), dtype=jnp.int32))
        n = len(self.configs)
        cond = [
            jnp.zeros((batch_size, c.width)) if a else None for c, a in zip(self.configs, self.use_adarms, strict=True)
        ]
        return self(
            [jnp.zeros((batch_size, 1, c.width)) for c in self.configs],
            jnp.zeros((batch_size, n), dtype=jnp.int32),
            jnp.ones((batch_size, n, n), dtype=bool),
            cond,
        )


class Embedder(nn.Module):
    vocab_size: int
    embed_dim: int

    @nn.compact
    def encode(self, tokens):
        table = self.param("input_embedding", nn.initializers.normal(), (self.vocab_size, self.embed_dim))
        x = table[(tokens,)]
        return x * jnp.sqrt(jnp.asarray(self.embed_dim, x.dtype))
