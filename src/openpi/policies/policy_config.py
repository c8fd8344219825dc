"""Build a served `Policy` from a training config: from a checkpoint, or freshly initialised for smoke tests.

The transform chain is the training config's own (one data pipeline for training and serving), built for
inference: indicator dropout off, norm stats read from the checkpoint's ``assets/<asset_id>/`` (the stats
the weights were trained with, not whatever sits in the local assets folder today).

Inference chain (openpi's order): repack → default prompt → robot inputs → normalize → model inputs;
outputs run model outputs → unnormalize → robot outputs → repack outputs.

The training config (an `openpi.training.config.TrainConfig`) is passed in, never imported: training sits above
policies (its registry names the robot transforms defined here), so it is typed `Any` and named in the docstrings.
"""

from __future__ import annotations

from collections.abc import Mapping
import logging
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from openpi import transforms as _transforms
from openpi.models import params_io
from openpi.policies import policy as _policy
from openpi.shared import download
from openpi.shared import errors
from openpi.shared import normalize as _normalize

logger = logging.getLogger(__name__)


def _metadata(train_config: Any, cfg_beta: float | None, extra: Mapping[str, Any]) -> dict:
    model = train_config.model
    meta = dict(train_config.policy_metadata or {})
    meta.setdefault("config", train_config.name)
    meta.setdefault("model_type", model.model_type)
    meta.setdefault("action_horizon", model.action_horizon)
    if cfg_beta is not None:
        meta.setdefault("cfg_beta", float(cfg_beta))
    meta.update(extra)
    return meta


def inference_data_config(
    train_config: Any, assets_dirs: pathlib.Path, tokenizer_path: str | os.PathLike | None = None
) -> Any:
    """The config's data pipeline (a `DataConfig`) as used for inference: indicator dropout off."""
    return train_config.data.create(
        assets_dirs,
        train_config.model,
        tokenizer_path=str(tokenizer_path) if tokenizer_path is not None else train_config.tokenizer_path,
        indicator_dropout=0.0,
        seed=train_config.seed,
    )


def _build_policy(
    train_config: Any,
    data_config: Any,
    params: Any,
    norm_stats: Mapping[str, _normalize.NormStats] | None,
    *,
    repack_transforms: _transforms.Group | None,
    default_prompt: str | None,
    sample_kwargs: Mapping[str, Any] | None,
    cfg_beta: float | None,
    metadata: Mapping[str, Any],
    seed: int,
    noise_per_observation: bool,
) -> _policy.Policy:
    if norm_stats is not None:  # also those passed in by hand, which no file check has seen
        _normalize.check_keys(norm_stats, _normalize.POLICY_KEYS, source=f"The norm stats of {train_config.name!r}")
    repack = repack_transforms or _transforms.Group()
    use_quantiles = data_config.use_quantile_norm
    inputs = [
        *repack.inputs,
        _transforms.InjectDefaultPrompt(default_prompt),
        *data_config.data_transforms.inputs,
        _transforms.Normalize(norm_stats, use_quantiles=use_quantiles),
        *data_config.model_transforms.inputs,
    ]
    outputs = [
        *data_config.model_transforms.outputs,
        _transforms.Unnormalize(norm_stats, use_quantiles=use_quantiles),
        *data_config.data_transforms.outputs,
        *repack.outputs,
    ]
    return _policy.Policy(
        train_config.model.model(),
        params,
        rng=jax.random.key(seed),
        transforms=inputs,
        output_transforms=outputs,
        sample_kwargs=sample_kwargs,
        metadata=_metadata(train_config, cfg_beta, metadata),
        cfg_beta=cfg_beta,
        noise_per_observation=noise_per_observation,
    )


def create_trained_policy(
    train_config: Any,
    checkpoint_dir: str | os.PathLike,
    *,
    repack_transforms: _transforms.Group | None = None,
    sample_kwargs: Mapping[str, Any] | None = None,
    default_prompt: str | None = None,
    norm_stats: Mapping[str, _normalize.NormStats] | None = None,
    tokenizer_path: str | os.PathLike | None = None,
    cfg_beta: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    seed: int = 0,
    noise_per_observation: bool = False,
) -> _policy.Policy:
    """A policy serving the weights of one checkpoint step (``<checkpoint_dir>/params``).

    Args:
        train_config: The `TrainConfig` the checkpoint was trained with (model shape, transforms, asset id).
        checkpoint_dir: A step directory (``checkpoints/<config>/<exp>/<step>``), local or in the openpi cache.
        repack_transforms: Optional renaming of the client's keys into the robot layout.
        sample_kwargs: Extra ``sample_actions`` arguments (e.g. ``{"num_steps": 10}``).
        default_prompt: Prompt used when a request has none (before the config's own default).
        norm_stats: Override the checkpoint's norm stats.
        tokenizer_path: PaliGemma SentencePiece model; default: the config's, else the openpi cache.
        cfg_beta: Classifier-free guidance β for pi0.6 configs; None: the config's `cfg_beta` if it has one, else
            plain conditioning on the indicator.
        metadata: Extra entries for the metadata sent to clients.
        seed: Seed of the sampling noise.
        noise_per_observation: Each request's noise from the seed and its inputs, not from the order of requests
            (reproducible closed-loop evaluation with several clients; see `Policy`).
    """
    try:
        checkpoint_dir = download.maybe_download(checkpoint_dir)
    except download.ArtefactNotFoundError as exc:
        raise errors.CheckpointError(f"Checkpoint not found: {exc}") from exc
    params_dir = checkpoint_dir / "params"
    if not params_dir.is_dir():
        raise errors.CheckpointError(
            f"{checkpoint_dir} has no params/ folder; pass a checkpoint step directory such as "
            f"checkpoints/{train_config.name}/<exp_name>/<step>."
        )
    # Cheap checks first (tokenizer, norm stats), so a wrong path fails before gigabytes of weights load.
    data_config = inference_data_config(train_config, checkpoint_dir / "assets", tokenizer_path)
    if norm_stats is None:
        norm_stats = _normalize.load_step_norm_stats(checkpoint_dir, data_config.asset_id)
        logger.info("Loaded norm stats from %s", checkpoint_dir / "assets" / str(data_config.asset_id))
    params = params_io.restore_params(params_dir, dtype=_serving_dtype(train_config.model), restore_type=jax.Array)
    params_io.check_tree_matches(
        train_config.model.params_shape(), params, check_dtypes=False, what=f"checkpoint {params_dir}"
    )
    return _build_policy(
        train_config,
        data_config,
        params,
        norm_stats,
        repack_transforms=repack_transforms,
        default_prompt=default_prompt,
        sample_kwargs=sample_kwargs,
        cfg_beta=cfg_beta,
        # Only the run/step part of the path: clients need not learn the server's directory layout.
        metadata={"checkpoint": "/".join(checkpoint_dir.parts[-3:]), **(metadata or {})},
        seed=seed,
        noise_per_observation=noise_per_observation,
    )


def _serving_dtype(model_config: Any) -> Any:
    """As openpi: bfloat16 models serve bfloat16 weights (half the memory); float32 models keep float32."""
    return jnp.bfloat16 if model_config.dtype == "bfloat16" else jnp.float32


def random_params(model_config: Any, *, seed: int = 0, scale: float = 0.02, dtype: Any = None) -> Any:
    """A complete parameter tree for `model_config` with every weight drawn from N(0, scale^2).

    For smoke tests and benchmarks only: it has the real tree (paths, shapes, dtypes) and gives finite,
    input-dependent outputs, but skips flax's initialisers, whose compilation takes a minute on a busy CPU.
    `dtype` overrides the stored dtype of every leaf.
    """
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.standard_normal(s.shape, dtype=np.float32) * scale, dtype=dtype or s.dtype),
        model_config.params_shape(),
    )


def create_dummy_policy(
    train_config: Any,
    *,
    tokenizer_path: str | os.PathLike | None = None,
    sample_kwargs: Mapping[str, Any] | None = None,
    default_prompt: str | None = None,
    norm_stats: Mapping[str, _normalize.NormStats] | None = None,
    cfg_beta: float | None = None,
    seed: int = 0,
    noise_per_observation: bool = False,
) -> _policy.Policy:
    """A policy with random weights (`random_params`, so random actions): for smoke tests of robots and servers.

    Norm stats: as given, else the config's local assets if computed, else none (actions in model units).
    Use a dummy-size config (e.g. debug_pi06); a full-size one works but takes long to initialise.
    """
    data_config = inference_data_config(train_config, train_config.assets_dirs, tokenizer_path)
    params = random_params(train_config.model, seed=seed, dtype=_serving_dtype(train_config.model))
    return _build_policy(
        train_config,
        data_config,
        params,
        norm_stats if norm_stats is not None else data_config.norm_stats,
        repack_transforms=None,
        default_prompt=default_prompt,
        sample_kwargs=sample_kwargs,
        cfg_beta=cfg_beta,
        metadata={"dummy": True},
        seed=seed,
        noise_per_observation=noise_per_observation,
    )
