"""Gemma3 decoder (text-only) in Flax linen, laid out so the public Gemma3 checkpoints load unchanged.

The value model reads observations with a Gemma3 trunk. Its parameters are named exactly as in the
released Gemma3 checkpoints (google-deepmind/gemma, nested layout): `embedder/input_embedding`,
unrolled `layer_{i}/{attn,mlp,...}`, `final_norm/scale`. Layers are unrolled rather than scanned because the
released checkpoints store them that way and because local and global layers differ (window, RoPE base).

What distinguishes Gemma3 from the Gemma 1/2 used by pi0: RMS norm on queries and keys (`_query_norm`,
`_key_norm`), a norm after attention and after the MLP as well as before, and a 5:1 pattern of local
sliding-window layers to global layers, with RoPE base 10k on local layers and 1M on global ones.
"""

import dataclasses
import math
import pathlib
import re
from typing import Literal

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from openpi.shared import errors

# Masked attention logits: large negative but finite, so rows that are fully masked stay finite.
_NEG_INF = -2.3819763e38

Variant = Literal["gemma3_270m", "dummy"]


@dataclasses.dataclass(frozen=True)
class Gemma3Config:
    """Shape of a Gemma3 decoder; `get_config` returns the named ones."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    sliding_window: int
    # Every `global_every`-th layer (1-based) attends globally; the others use the sliding window.
    global_every: int = 6
    local_rope_base: float = 10_000.0
    global_rope_base: float = 1_000_000.0

    def is_global(self, layer: int) -> bool:
        """Whether layer `layer` (0-based) is a global-attention layer (5 local then 1 global for Gemma3)."""
        return (layer + 1) % self.global_every == 0


def get_config(variant: str) -> Gemma3Config:
    """Returns the named Gemma3 configuration.

    `gemma3_270m` matches the released Gemma3-270M. `dummy` keeps every architectural feature (qk-norm,
    one global layer after five local ones, a window shorter than a typical sequence) at toy size for CPU
    tests; its vocabulary is small, so it is only used with tiny test tokenizers.
    """
    if variant == "gemma3_270m":
        return Gemma3Config(
            width=640,
            depth=18,
            mlp_dim=2048,
            num_heads=4,
            num_kv_heads=1,
            head_dim=256,
            vocab_size=262_144,
            sliding_window=512,
        )
    if variant == "dummy":
        return Gemma3Config(
            width=64,
            depth=6,
            mlp_dim=128,
            num_heads=4,
            num_kv_heads=1,
            head_dim=16,
            vocab_size=4096,
            sliding_window=16,
        )
    raise errors.ConfigError(f"Unknown Gemma3 variant {variant!r}; use one of 'gemma3_270m', 'dummy'.")


class RMSNorm(nn.Module):
    """Gemma RMS norm: x / rms(x) * (1 + scale), computed in float32, `scale` initialised to zero."""

    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        dtype = x.dtype
        scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        normed = x32 * jax.lax.rsqrt(var + 1e-6)
        return (normed * (1.0 + scale.astype(jnp.float32))).astype(dtype)


class Einsum(nn.Module):
    """A weight `w` of a fixed shape applied with an einsum equation (Gemma's naming)."""

    shape: tuple[int, ...]
    param_dtype: jnp.dtype = jnp.float32
    init_fn: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, eqn: str, x):
        w = self.param("w", self.init_fn, self.shape, self.param_dtype)
        return jnp.einsum(eqn, x, w.astype(x.dtype))


def apply_rope(x, positions, base: float):
    """Rotary embedding over the last axis, split in halves (Gemma convention). x: [B, T, N, H]."""
    head_dim = x.shape[-1]
    fraction = 2 * jnp.arange(head_dim // 2, dtype=jnp.float32) / head_dim
    timescale = base**fraction
    angles = positions[..., None].astype(jnp.float32) / timescale  # [B, T, H/2]
    angles = angles[..., None, :]  # broadcast over heads
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return out.astype(x.dtype)


def sliding_window_mask(positions, window: int):
    """[B, T, T] mask that keeps pairs whose positions differ by less than `window` (Gemma3 local layers)."""
    diff = positions[:, :, None] - positions[:, None, :]
    return jnp.abs(diff) < window


class Attention(nn.Module):
    """Multi-query / grouped-query attention with qk-norm; `kv_einsum` holds keys and values together."""

    config: Gemma3Config
    is_global: bool
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, positions, attn_mask):
        cfg = self.config
        q = Einsum((cfg.num_heads, cfg.width, cfg.head_dim), self.param_dtype, name="q_einsum")("BTD,NDH->BTNH", x)
        k, v = Einsum((2, cfg.num_kv_heads, cfg.width, cfg.head_dim), self.param_dtype, name="kv_einsum")(
            "BSD,CKDH->CBSKH", x
        )
        q = RMSNorm(self.param_dtype, name="_query_norm")(q)
        k = RMSNorm(self.param_dtype, name="_key_norm")(k)

        base = cfg.global_rope_base if self.is_global else cfg.local_rope_base
        q = apply_rope(q, positions, base) * (cfg.head_dim**-0.5)
        k = apply_rope(k, positions, base)

        if not self.is_global:
            attn_mask = jnp.logical_and(attn_mask, sliding_window_mask(positions, cfg.sliding_window))

        groups = cfg.num_heads // cfg.num_kv_heads
        b, t = q.shape[:2]
        q = q.reshape(b, t, cfg.num_kv_heads, groups, cfg.head_dim)
        logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, k, preferred_element_type=jnp.float32)
        logits = jnp.where(attn_mask[:, None, None, :, :], logits, _NEG_INF)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        encoded = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v).reshape(b, t, cfg.num_heads, cfg.head_dim)
        return Einsum((cfg.num_heads, cfg.head_dim, cfg.width), self.param_dtype, name="attn_vec_einsum")(
            "BTNH,NHD->BTD", encoded
        )


class FeedForward(nn.Module):
    """GeGLU MLP. Gemma3 stores the gating weight as [2, mlp_dim, width] ("transposed") and both weights as
    bare arrays directly under `mlp/` (no `w` level), which is what the released checkpoints hold."""

    config: Gemma3Config
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        init = nn.initializers.lecun_normal()
        gating = self.param("gating_einsum", init, (2, cfg.mlp_dim, cfg.width), self.param_dtype)
        linear = self.param("linear", init, (cfg.mlp_dim, cfg.width), self.param_dtype)
        gate = jnp.einsum("...F,NHF->...NH", x, gating.astype(x.dtype))
        hidden = nn.gelu(gate[..., 0, :]) * gate[..., 1, :]
        return jnp.einsum("...H,HF->...F", hidden, linear.astype(x.dtype))


class Block(nn.Module):
    """One decoder layer: norm -> attention -> norm -> residual, norm -> MLP -> norm -> residual."""

    config: Gemma3Config
    is_global: bool
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, positions, attn_mask):
        h = RMSNorm(self.param_dtype, name="pre_attention_norm")(x)
        h = Attention(self.config, self.is_global, self.dtype, self.param_dtype, name="attn")(h, positions, attn_mask)
        h = RMSNorm(self.param_dtype, name="post_attention_norm")(h)
        x = x + h
        h = RMSNorm(self.param_dtype, name="pre_ffw_norm")(x)
        h = FeedForward(self.config, self.param_dtype, name="mlp")(h)
        h = RMSNorm(self.param_dtype, name="post_ffw_norm")(h)
        return x + h


class Embedder(nn.Module):
    """Token embedding table; outputs are scaled by sqrt(width) as in every Gemma."""

    config: Gemma3Config
    param_dtype: jnp.dtype

    def setup(self):
        self.input_embedding = self.param(
            "input_embedding",
            nn.initializers.normal(stddev=1.0),
            (self.config.vocab_size, self.config.width),
            self.param_dtype,
        )

    def encode(self, tokens, dtype):
        x = jnp.take(self.input_embedding, tokens, axis=0).astype(dtype)
        return x * jnp.asarray(math.sqrt(self.config.width), dtype)

    def decode(self, x):
        return jnp.einsum("...D,VD->...V", x, self.input_embedding.astype(x.dtype))


class Gemma3(nn.Module):
    """Gemma3 decoder over already-embedded inputs, so callers can put image tokens before the text.

    `embed(tokens)` maps token ids to scaled embeddings; `__call__(x, positions, attn_mask)` runs all layers
    and the final norm and returns hidden states [B, T, width]; `logits(hidden)` uses the tied embedding.
    `attn_mask` is [B, T, T] (True = may attend); local layers additionally restrict it to the window.
    """

    config: Gemma3Config
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.embedder = Embedder(self.config, self.param_dtype)
        self.layers = [
            Block(self.config, self.config.is_global(i), self.dtype, self.param_dtype, name=f"layer_{i}")
            for i in range(self.config.depth)
        ]
        self.final_norm = RMSNorm(self.param_dtype)

    def embed(self, tokens):
        return self.embedder.encode(tokens, self.dtype)

    def __call__(self, x, positions, attn_mask):
        x = x.astype(self.dtype)
        for layer in self.layers:
            x = layer(x, positions, attn_mask)
        return self.final_norm(x)

    def logits(self, hidden):
        return self.embedder.decode(hidden)

    def lm(self, tokens, input_mask):
        """Causal language model over `tokens` (used to initialise every parameter and in tests)."""
        positions = jnp.cumsum(input_mask, axis=-1) - 1
        mask = causal_mask(input_mask)
        return self.logits(self(self.embed(tokens), positions, mask))


def causal_mask(input_mask):
    """[B, T, T] causal attention mask restricted to valid (True) tokens."""
    t = input_mask.shape[-1]
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    return causal[None] & input_mask[:, None, :] & input_mask[:, :, None]


# ---------------------------------------------------------------------------------------------------------------
# Loading the released Gemma3 checkpoints.
# ---------------------------------------------------------------------------------------------------------------


def load_gemma3_params(path, *, dtype=None, expected=None) -> dict:
    """Loads Gemma3 weights from an Orbax checkpoint in the public Gemma3 layout, as numpy arrays.

    Accepted layouts (those google-deepmind/gemma reads): the released "flat" one, whose top-level keys are
    `transformer/<module path>` mapping to `{param: array}` (with `mlp/linear/w`, `mlp/gating_einsum/w`),
    the library's "stacked" one (`transformer/stacked_layers/attention_type_<k>/...`, see `unstack_layers`)
    and the nested one that `model.init` produces (optionally under `transformer` or `params`). Vision-tower
    weights of the multimodal releases are dropped: the value model brings its own SigLIP. Returns the nested
    tree of the `Gemma3` module. With `expected` (a tree of arrays or ShapeDtypeStructs), keys and shapes are
    checked and a mismatch raises a `CheckpointError` naming the first offending parameter.
    """
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise errors.CheckpointError(
            f"Gemma3 checkpoint not found at {path}; pass the directory of a Gemma3 Orbax checkpoint."
        )
    if not path.is_dir():
        raise errors.CheckpointError(
            f"Gemma3 checkpoint {path} is a file; pass the Orbax checkpoint directory instead."
        )
    checkpointer = ocp.PyTreeCheckpointer()
    try:
        tree_md = _item_metadata(checkpointer, path)
        if tree_md is None and (path / "default").is_dir():  # Kauldron-style checkpoints keep the item here.
            path = path / "default"
            tree_md = _item_metadata(checkpointer, path)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise errors.CheckpointError(
            f"{path} is not a readable Orbax checkpoint ({e}); pass a Gemma3 Orbax checkpoint directory."
        ) from e
    if not isinstance(tree_md, dict) or not tree_md:
        raise errors.CheckpointError(f"{path} holds no parameter tree; pass a Gemma3 Orbax checkpoint directory.")

    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree_md)
    raw = checkpointer.restore(path, args=ocp.args.PyTreeRestore(item=tree_md, restore_args=restore_args))
    params = gemma3_nested_from_checkpoint(raw, source=str(path))
    if dtype is not None:
        params = jax.tree.map(lambda x: np.asarray(x).astype(dtype), params)
    if expected is not None:
        check_tree(expected, params, source=str(path))
    return params


def _item_metadata(checkpointer, path):
    md = checkpointer.metadata(path)
    md = getattr(md, "item_metadata", md)
    return getattr(md, "tree", md)


# `<prefix>stacked_layers/attention_type_<k><suffix>`: the gemma library's stacked layout, where every layer whose
# index is k modulo the attention period sits on the leading axis, in layer order.
_STACKED_KEY = re.compile(r"^(?P<prefix>.*?)stacked_layers/attention_type_(?P<kind>\d+)(?P<suffix>/.*)?$")


def unstack_layers(tree: dict, *, source: str = "checkpoint") -> dict:
    """The gemma library's "stacked" layout -> the released flat one (`transformer/layer_<n>/...`: {param: array}).

    google-deepmind/gemma can save a model's layers stacked per attention type (local, ..., global):
    `transformer/stacked_layers/attention_type_<k>/<module path>` holds `{param: [slices, ...]}` whose slice `i` is
    layer `i * period + k`, the period being the number of attention types. Its loader reads that layout, so ours
    does too, rather than asking users to convert a checkpoint the reference accepts.
    """
    kinds = {int(m["kind"]) for m in map(_STACKED_KEY.match, tree) if m}
    period = max(kinds) + 1
    missing = sorted(set(range(period)) - kinds)
    if missing:
        raise errors.CheckpointError(
            f"{source} stacks layers by attention types {sorted(kinds)} but lacks types {missing}; it is incomplete."
        )
    out = {key: leaf for key, leaf in tree.items() if not _STACKED_KEY.match(key)}
    unstacked: dict = {}
    for key, leaf in tree.items():
        m = _STACKED_KEY.match(key)
        if m is None:
            continue
        if not isinstance(leaf, dict):
            raise errors.CheckpointError(
                f"{source} has {key!r} as a bare array, but a stacked layer holds {{param: array}}; is it complete?"
            )
        for name, stacked in leaf.items():
            for i, layer in enumerate(np.asarray(stacked)):
                unstacked.setdefault(f"{m['prefix']}layer_{i * period + int(m['kind'])}{m['suffix'] or ''}", {})[
                    name
                ] = layer
    both = sorted(set(out) & set(unstacked))
    if both:
        raise errors.CheckpointError(f"{source} holds {both[0]} both stacked and unstacked; pass one layout only.")
    return {**out, **unstacked}


def gemma3_nested_from_checkpoint(tree: dict, *, source: str = "checkpoint") -> dict:
    """Converts a restored Gemma3 checkpoint tree (flat, stacked or nested layout) into the `Gemma3` module tree."""
    if any(_STACKED_KEY.match(k) for k in tree):
        tree = unstack_layers(tree, source=source)
    keys = list(tree)
    if keys and all("/" in k for k in keys):
        nested: dict = {}
        for key, leaf in tree.items():
            if not key.startswith("transformer/"):
                continue  # e.g. SigLiPFromPatches_0/...: the multimodal vision tower.
            *parents, last = key.split("/")[1:]
            node = nested
            for p in parents:
                node = node.setdefault(p, {})
            # `mlp/linear` and `mlp/gating_einsum` are stored as {"w": array} but are bare arrays in the module.
            if parents and parents[-1] == "mlp" and isinstance(leaf, dict) and set(leaf) == {"w"}:
                leaf = leaf["w"]
            node[last] = leaf
        tree = nested
    else:
        # Nested trees may sit under "transformer" or "params" (model.init output, Kauldron train state).
        while "embedder" not in tree and len({"params", "transformer"} & set(tree)) == 1:
            tree = tree["params"] if "params" in tree else tree["transformer"]
    tree = dict(tree)
    tree.pop("vision_encoder", None)
    if "embedder" in tree:
        tree["embedder"] = {k: v for k, v in tree["embedder"].items() if not k.startswith("mm_")}
    if "embedder" not in tree or "final_norm" not in tree:
        raise errors.CheckpointError(
            f"{source} does not look like a Gemma3 checkpoint (no embedder/final_norm); pass a Gemma3 Orbax checkpoint directory."
        )
    return tree


def check_tree(expected, actual, *, source: str) -> None:
    """Raises a CheckpointError naming the first parameter that is missing, unexpected or of the wrong shape."""
    exp = traverse_util.flatten_dict(expected, sep="/")
    act = traverse_util.flatten_dict(actual, sep="/")
    for k in sorted(exp):
        if k not in act:
            raise errors.CheckpointError(
                f"{source} lacks parameter {k!r}; the checkpoint does not match the configured model variant."
            )
        if tuple(exp[k].shape) != tuple(act[k].shape):
            raise errors.CheckpointError(
                f"{source} has {k!r} of shape {tuple(act[k].shape)} but the model needs {tuple(exp[k].shape)}; "
                "check that the configured variant matches the checkpoint."
            )
    extra = sorted(set(act) - set(exp))
    if extra:
        raise errors.CheckpointError(
            f"{source} has parameter {extra[0]!r} that the model lacks; the checkpoint does not match the configured variant."
        )
