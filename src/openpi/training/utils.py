"""Training-state plumbing of `openpi.training.trainer`: the state pytree, trainable/frozen splits, EMA, and a
weighted loss.

Parameters are pure nested dicts (openpi's checkpoint tree). Frozen weights (LoRA base weights) are kept out
of the optimizer and of the gradient entirely: the train step differentiates only the trainable leaves, and
the optimizer state exists only for them.
"""

from collections.abc import Callable
from typing import Any

from flax import struct
import jax
import jax.numpy as jnp

from openpi.models import params_io

Params = dict[str, Any]


@struct.dataclass
class TrainState:
    """Everything that changes during training (a pytree, so it can be jitted, sharded and checkpointed)."""

    step: jax.Array
    # The full parameter tree (frozen leaves included, possibly in bf16).
    params: Params
    # Optimizer state over the trainable leaves only.
    opt_state: Any
    # Exponential moving average of the trainable leaves (flat dict path -> array), or None when EMA is off.
    ema_params: dict[str, jax.Array] | None = None


def split_params(params: Params, is_frozen: Callable[[str], bool]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainable, frozen) flat dicts keyed by '/'-joined paths."""
    flat = params_io.flatten(params)
    trainable = {k: v for k, v in flat.items() if not is_frozen(k)}
    frozen = {k: v for k, v in flat.items() if is_frozen(k)}
    return trainable, frozen


def merge_params(trainable: dict[str, Any], frozen: dict[str, Any]) -> Params:
    return params_io.unflatten({**trainable, **frozen})


def ema_update(ema: dict[str, jax.Array], new: dict[str, jax.Array], decay: float) -> dict[str, jax.Array]:
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p.astype(e.dtype), ema, new)


def params_for_inference(state: TrainState, is_frozen: Callable[[str], bool]) -> Params:
    """The weights to save as `params/`: EMA of the trainable leaves when EMA is on, else the raw ones."""
    if state.ema_params is None:
        return state.params
    _, frozen = split_params(state.params, is_frozen)
    return merge_params(dict(state.ema_params), frozen)


def weighted_mean(per_sample: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Mean over the batch, weighted per frame when `weights` is given (weights need not sum to 1)."""
    if weights is None:
        return jnp.mean(per_sample)
    weights = jnp.asarray(weights, per_sample.dtype).reshape(per_sample.shape[0])
    return jnp.sum(per_sample * weights) / jnp.maximum(jnp.sum(weights), 1e-8)


def global_norm(tree: Any) -> jax.Array:
    leaves = [jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)]
    return jnp.sqrt(sum(leaves)) if leaves else jnp.zeros(())


def count_params(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))


def random_batch(model_config: Any, batch_size: int, seed: int = 0) -> dict[str, Any]:
    """A fixed loader-shaped batch of random inputs for `model_config` (images in [-1, 1], prompts of random length),
    for timing and comparing train steps without a dataset."""
    import numpy as np

    rng = np.random.default_rng(seed)
    batch = model_config.fake_obs(batch_size).to_dict()
    batch["image"] = {k: rng.uniform(-1, 1, v.shape).astype(np.float32) for k, v in batch["image"].items()}
    batch["state"] = rng.normal(size=batch["state"].shape).astype(np.float32)
    shape = batch["tokenized_prompt"].shape
    batch["tokenized_prompt"] = rng.integers(0, model_config.vocab_size, shape).astype(np.int32)
    batch["tokenized_prompt_mask"] = np.arange(shape[1])[None, :] < rng.integers(
        shape[1] // 4, shape[1], (batch_size, 1)
    )
    batch["actions"] = rng.normal(size=(batch_size, model_config.action_horizon, model_config.action_dim))
    return jax.tree.map(jnp.asarray, batch)
