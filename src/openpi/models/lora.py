"""Low-rank adapters (LoRA) for the Gemma einsums and feed-forward blocks.

The parameter names and shapes follow openpi so that LoRA checkpoints trained there load here: an einsum keeps its
full weight `w` and gains `lora_a` / `lora_b` (the last two axes of `w` replaced by the rank), and the GeGLU block
keeps `gating_einsum` / `linear` and gains `gating_einsum_lora_{a,b}` / `linear_lora_{a,b}`. Both adapters start
from a small normal init (as openpi), so a fresh LoRA model is not exactly the base model; loaders overwrite the
base weights and keep the fresh adapters.
"""

import dataclasses
import math
import re

import flax.linen as nn
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """How one family of weights (attention or FFN) is adapted."""

    rank: int
    alpha: float = 1.0
    # Standard deviation of the normal init of both adapter matrices (openpi: 0.01).
    init_std: float = 0.01
    # Rank-stabilised scaling alpha / sqrt(rank) instead of alpha / rank.
    rslora: bool = False
    # The two axes of the weight that the adapter factorises (input features, output features).
    axes: tuple[int, int] = (-2, -1)
    # Einsum label for the rank axis; must not occur in the equations it is used with.
    label: str = "L"

    @property
    def scaling(self) -> float:
        return self.alpha / math.sqrt(self.rank) if self.rslora else self.alpha / self.rank

    def init_fn(self) -> nn.initializers.Initializer:
        return nn.initializers.normal(stddev=self.init_std)


def lora_equations(eqn: str, weight_labels: str, config: LoRAConfig) -> tuple[str, str]:
    """Splits `x, w -> y` into `x, a -> h` and `h, b -> y` where the rank axis replaces one weight axis each.

    `a` keeps the input axis and replaces the output axis by the rank; `b` the other way round.
    """
    if config.label in eqn:
        raise ValueError(f"LoRA label {config.label!r} already occurs in einsum equation {eqn!r}.")
    match = re.fullmatch(r"(.*),(.*)->(.*)", eqn)
    if match is None:
        raise ValueError(f"Einsum equation {eqn!r} is not of the form 'x,w->y'.")
    lhs, rhs, out = match.groups()
    if rhs != weight_labels:
        raise ValueError(f"Einsum equation {eqn!r} does not use weight labels {weight_labels!r}.")
    in_label, out_label = rhs[config.axes[0]], rhs[config.axes[1]]
    a_rhs = rhs.replace(out_label, config.label)
    hidden = out.replace(out_label, config.label)
    b_rhs = rhs.replace(in_label, config.label)
    return f"{lhs},{a_rhs}->{hidden}", f"{hidden},{b_rhs}->{out}"


class Einsum(nn.Module):
    """An einsum against a learned weight `w`, optionally plus a LoRA update `(x a) b * scaling`."""

    shape: tuple[int, ...]
    init_fn: nn.initializers.Initializer = nn.initializers.zeros
    lora_config: LoRAConfig | None = None

    @nn.compact
    def __call__(self, eqn: str, x):
        dtype = x.dtype  # compute in the activation dtype (bfloat16 in real runs); params stay float32
        w = self.param("w", self.init_fn, self.shape)
        result = jnp.einsum(eqn, x, w.astype(dtype))
        if (config := self.lora_config) is not None:
            shape_a, shape_b = list(self.shape), list(self.shape)
            shape_a[config.axes[1]] = config.rank
            shape_b[config.axes[0]] = config.rank
            a = self.param("lora_a", config.init_fn(), tuple(shape_a))
            b = self.param("lora_b", config.init_fn(), tuple(shape_b))
            weight_labels = eqn.split(",")[1].split("->")[0]
            eqn_a, eqn_b = lora_equations(eqn, weight_labels, config)
            update = jnp.einsum(eqn_b, jnp.einsum(eqn_a, x, a.astype(dtype)), b.astype(dtype))
            result = result + update * jnp.asarray(config.scaling, dtype)
        return result


class FeedForward(nn.Module):
    """Gemma's GeGLU block: `linear(gelu(x W_gate) * (x W_up))`, with optional LoRA on all three matrices.

    Openpi adds the FFN adapters without the alpha/rank scaling (its rank == alpha for every variant, so the
    scaling is 1 anyway); we do the same so that trained adapters mean the same thing here.
    """

    features: int
    hidden_dim: int
    lora_config: LoRAConfig | None = None

    @nn.compact
    def __call__(self, x):
        dtype = x.dtype
        w_gating = self.param(
            "gating_einsum",
            nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,)),
            (2, self.features, self.hidden_dim),
        )
        w_linear = self.param(
            "linear", nn.initializers.lecun_normal(in_axis=-2, out_axis=-1), (self.hidden_dim, self.features)
        )
        gating_lora = linear_lora = None
        if (config := self.lora_config) is not None:
            init = config.init_fn()
            gating_lora = (
                self.param("gating_einsum_lora_a", init, (2, self.features, config.rank)),
                self.param("gating_einsum_lora_b", init, (2, config.rank, self.hidden_dim)),
            )
            linear_lora = (
                self.param("linear_lora_a", init, (self.hidden_dim, config.rank)),
                self.param("linear_lora_b", init, (config.rank, self.features)),
            )

        def dot(h, w, adapters, index=None):
            if index is not None:
                w = w[index]
                adapters = None if adapters is None else (adapters[0][index], adapters[1][index])
            out = jnp.dot(h, w.astype(dtype))
            if adapters is not None:
                out = out + jnp.dot(jnp.dot(h, adapters[0].astype(dtype)), adapters[1].astype(dtype))
            return out

        gate = nn.gelu(dot(x, w_gating, gating_lora, 0))
        up = dot(x, w_gating, gating_lora, 1)
        return dot(gate * up, w_linear, linear_lora)
