"""SigLIP vision transformer (`PaliGemma/img`) with the parameter names of big_vision / openpi.

Images [B, H, W, 3] in [-1, 1] become tokens [B, (H/p)*(W/p), llm_width]: a p x p patch conv (`embedding`), a learned
position embedding, scanned encoder blocks (`Transformer/encoderblock`, leading depth axis), `encoder_norm`, and a
linear `head` (zero-initialised, as openpi) into the LLM width. No pooling: every patch is a prefix token.

Position embeddings: `"learn"` (openpi's, a learned table; the default, so checkpoints load unchanged) or
`"sincos2d"`, a fixed 2-D sine-cosine grid with no parameter. A from-scratch toy tower has to learn where each
patch is before anything can use it; the fixed grid gives every token its (row, column) from the first step,
which is what a task whose action is "go where the red thing is" needs (measured: benchmarks/sim_gate_bench.py).

Besides openpi's So400m/14, tiny variants (big_vision's "mu": width 32, depth 1) with large patches make toy runs
fast: "mu/32" turns a 224 px image into 7 x 7 = 49 tokens instead of 256 tokens through 27 wide layers.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from openpi.shared import errors


@dataclasses.dataclass(frozen=True)
class Config:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int


# Width, depth, mlp_dim, heads per size name (big_vision's table, Table 2 of arXiv 2106.04560).
_SIZES = {
    "mu": (32, 1, 128, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16),
}
# Tiny variants for toy runs on a laptop CPU.
TINY_VARIANTS = ("mu/32", "mu/16", "mu/14")
POSEMB_KINDS = ("learn", "sincos2d")


def get_config(variant: str) -> Config:
    """Parses "Size/patch", e.g. "So400m/14" or "mu/32"."""
    size, _, patch = variant.partition("/")
    if size not in _SIZES or not patch.isdigit() or int(patch) <= 0:
        raise errors.ConfigError(
            f"Unknown SigLIP variant {variant!r}; use 'Size/patch' with Size in {sorted(_SIZES)}, e.g. 'So400m/14'."
        )
    width, depth, mlp_dim, heads = _SIZES[size]
    return Config(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=heads, patch_size=int(patch))


def num_tokens(variant: str, resolution: tuple[int, int]) -> int:
    """Number of image tokens a variant produces for one image of the given (height, width)."""
    p = get_config(variant).patch_size
    return (resolution[0] // p) * (resolution[1] // p)


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """Fixed position embedding [1, h*w, width]: sin/cos of the column then of the row, width // 4 frequencies each.

    Frequencies are spaced geometrically from 1 down to 1/temperature (the transformer recipe, one axis per half),
    so neighbouring patches differ in the fast channels and far ones in the slow channels.
    """
    if width % 4:
        raise errors.ConfigError(f"The 2-D sin-cos position embedding needs a width divisible by 4, got {width}.")
    quarter = width // 4
    omega = 1.0 / temperature ** (np.arange(quarter) / max(quarter - 1, 1))
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    x = cols.reshape(-1, 1) * omega[None]
    y = rows.reshape(-1, 1) * omega[None]
    table = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
    return table[None].astype(np.float32)


class MlpBlock(nn.Module):
    mlp_dim: int
    dtype_mm: str = "float32"

    @nn.compact
    def __call__(self, x):
        inits = {"kernel_init": nn.initializers.xavier_uniform(), "bias_init": nn.initializers.normal(stddev=1e-6)}
        width = x.shape[-1]
        x = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype_mm, **inits)(x))
        return nn.Dense(width, dtype=self.dtype_mm, **inits)(x)


class Encoder1DBlock(nn.Module):
    """Pre-norm block: x + MHSA(LN(x)), then x + MLP(LN(x)). The scan carry is x; there is no per-layer output."""

    mlp_dim: int
    num_heads: int
    dtype_mm: str = "float32"

    @nn.compact
    def __call__(self, x, _):
        y = nn.LayerNorm(dtype=self.dtype_mm)(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype_mm
        )(y, y)
        x = x + y
        y = nn.LayerNorm(dtype=self.dtype_mm)(x)
        x = x + MlpBlock(mlp_dim=self.mlp_dim, dtype_mm=self.dtype_mm)(y)
        return x, None


class Encoder(nn.Module):
    depth: int
    mlp_dim: int
    num_heads: int
    dtype_mm: str = "float32"
    remat: bool = True

    @nn.compact
    def __call__(self, x):
        block = Encoder1DBlock
        if self.remat:
            block = nn.remat(block, prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)
        x, _ = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=nn.broadcast,
            length=self.depth,
        )(mlp_dim=self.mlp_dim, num_heads=self.num_heads, dtype_mm=self.dtype_mm, name="encoderblock")(x, None)
        return nn.LayerNorm(name="encoder_norm", dtype=self.dtype_mm)(x)


class Module(nn.Module):
    """SigLIP tower producing one token per patch, projected to `num_classes` (the LLM width)."""

    num_classes: int
    variant: str = "So400m/14"
    dtype_mm: str = "float32"
    remat: bool = True
    posemb: str = "learn"

    @nn.compact
    def __call__(self, image):
        cfg = get_config(self.variant)
        # Patch extraction and position embedding in float32 (as openpi), the encoder in dtype_mm.
        image = jnp.asarray(image, jnp.float32)
        x = nn.Conv(
            cfg.width,
            (cfg.patch_size, cfg.patch_size),
            strides=(cfg.patch_size, cfg.patch_size),
            padding="VALID",
            dtype=jnp.float32,
            name="embedding",
        )(image)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        if self.posemb == "learn":
            pos = self.param("pos_embedding", nn.initializers.normal(stddev=1 / np.sqrt(c)), (1, h * w, c))
        elif self.posemb == "sincos2d":
            pos = jnp.asarray(posemb_sincos_2d(h, w, c))
        else:
            raise errors.ConfigError(f"Unknown SigLIP position embedding {self.posemb!r}; use one of {POSEMB_KINDS}.")
        x = (x + pos).astype(self.dtype_mm)
        x = Encoder(cfg.depth, cfg.mlp_dim, cfg.num_heads, self.dtype_mm, self.remat, name="Transformer")(x)
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype_mm, name="head")(x)
