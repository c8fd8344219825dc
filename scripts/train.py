"""Train a policy from a named config: one GPU, many GPUs (FSDP over a mesh), or many hosts.

    uv run scripts/train.py <config name> --exp-name=my_run [--overwrite | --resume] [--field=value ...]

Multi-host runs use JAX's own distributed runtime. Every process runs this same command; each reads only its
share of every batch and all of them write one checkpoint together. Tell the processes how to meet with
environment variables (or the equivalent flags, which must come before the config name):

    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=<0 or 1> uv run scripts/train.py ...
    uv run scripts/train.py --coordinator-address=host0:1234 --num-processes=2 --process-id=0 <config> ...

- SLURM: `srun --ntasks=<hosts> --ntasks-per-node=1 uv run scripts/train.py <config> ...` works without the
  variables: when SLURM_NTASKS > 1, `jax.distributed.initialize()` reads SLURM's own variables.
- TPU pods: run the command on every worker (`gcloud compute tpus tpu-vm ssh ... --worker=all`) and set
  OPENPI_DISTRIBUTED=1; JAX finds the coordinator from the TPU metadata.
- `--fsdp-devices=N` splits parameters and optimizer state over N devices (keep N within one host).

Before anything compiles the script checks the dataset columns, the norm stats, the weight files and that
the batch divides over the devices, and stops with one sentence when something is off.
"""

from collections.abc import Sequence
import dataclasses
import functools
import logging
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from openpi.models import params_io
from openpi.shared import errors
from openpi.training import checkpoints as _checkpoints
from openpi.training import config as _config
from openpi.training import data_loader as _data_loader
from openpi.training import distributed as _distributed
from openpi.training import optimizer as _optimizer
from openpi.training import sharding as _sharding
from openpi.training import utils as _utils
from openpi.training import wandb_logging as _wandb_logging
from openpi.training import weight_loaders

logger = logging.getLogger("openpi.train")


class TrainingDivergedError(errors.UserError, FloatingPointError):
    """The loss became NaN or infinite."""


# ------------------------------------------------------------------------------------------- distributed


# --------------------------------------------------------------------------------------------- checks


def preflight(config: _config.TrainConfig, mesh: jax.sharding.Mesh) -> _config.DataConfig:
    """Everything that can be wrong with the inputs, checked before compiling; returns the data config."""
    if config.num_train_steps < 1:
        raise errors.ConfigError(f"num_train_steps must be >= 1, got {config.num_train_steps}.")
    _sharding.check_batch_divisible(config.batch_size, mesh)
    weight_loaders.validate(config.weight_loader)
    data_config = config.create_data_config(train=True)
    if not data_config.fake_data:
        if data_config.norm_stats is None:
            where = [str(p) for p in config.data.norm_stats_dirs(config.assets_dirs)]
            raise errors.ConfigError(
                f"No norm stats for config {config.name!r} (looked in {where}); run "
                f"`uv run scripts/compute_norm_stats.py {config.name}` first."
            )
        from openpi.datasets import lerobot

        dataset = lerobot.LeRobotDataset.open(data_config.repo_id)
        _data_loader.check_dataset(dataset, data_config, config.model)
    return data_config


# ------------------------------------------------------------------------------------------ train state


@dataclasses.dataclass(frozen=True)
class Trainer:
    """The pure pieces of a run: model, optimizer, freeze rule; builds and steps `TrainState`s."""

    config: _config.TrainConfig

    @functools.cached_property
    def model(self):
        return self.config.model.model()

    @functools.cached_property
    def is_frozen(self):
        return self.config.get_freeze_filter()

    @functools.cached_property
    def tx(self) -> optax.GradientTransformation:
        return _optimizer.create_optimizer(self.config.optimizer, self.config.lr_schedule)

    def init(self, rng: jax.Array, partial_params: dict[str, Any] | None = None) -> _utils.TrainState:
        """Fresh params (overwritten by loaded weights where given), frozen ones cast to bf16, optimizer state."""
        params = self.model.init_params(rng)
        if partial_params:
            flat = params_io.flatten(params)
            flat.update({k: jnp.asarray(v, flat[k].dtype) for k, v in partial_params.items()})
            params = params_io.unflatten(flat)
        if any(self.is_frozen(k) for k in params_io.flatten(params)):
            params = _utils.cast_frozen(params, self.is_frozen)
        trainable, _ = _utils.split_params(params, self.is_frozen)
        opt_state = self.tx.init(params_io.unflatten(trainable))
        ema = dict(trainable) if self.config.ema_decay is not None else None
        return _utils.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state, ema_params=ema)

    def step(self, base_rng: jax.Array, state: _utils.TrainState, batch: dict[str, Any]):
        rng = jax.random.fold_in(base_rng, state.step)
        observation, actions, weights = _data_loader.batch_to_model_inputs(batch)
        trainable, frozen = _utils.split_params(state.params, self.is_frozen)

        def loss_fn(trainable):
            params = _utils.merge_params(trainable, frozen)
            per_step = self.model.compute_loss(params, rng, observation, actions, train=True)  # [B, H]
            return _utils.weighted_mean(jnp.mean(per_step, axis=-1), weights)

        loss, grads = jax.value_and_grad(loss_fn)(trainable)
        trainable_tree = params_io.unflatten(trainable)
        updates, opt_state = self.tx.update(params_io.unflatten(grads), state.opt_state, trainable_tree)
        new_trainable = params_io.flatten(optax.apply_updates(trainable_tree, updates))
        ema = state.ema_params
        if ema is not None:
            ema = _utils.ema_update(ema, new_trainable, self.config.ema_decay)
        new_state = state.replace(
            step=state.step + 1,
            params=_utils.merge_params(new_trainable, frozen),
            opt_state=opt_state,
            ema_params=ema,
        )
        info = {
            "loss": loss,
            "grad_norm": _utils.global_norm(grads),
            "param_norm": _utils.global_norm(new_trainable),
        }
        return new_state, info


def checkpoint_items(trainer: Trainer, state: _utils.TrainState) -> tuple[Any, dict[str, Any]]:
    """(params to serve, train_state item): EMA weights go to params/, raw trainable weights to train_state/."""
    train_state: dict[str, Any] = {"step": state.step, "opt_state": state.opt_state}
    if state.ema_params is not None:
        trainable, _ = _utils.split_params(state.params, trainer.is_frozen)
        train_state["trainable_params"] = params_io.unflatten(trainable)
    return _utils.params_for_inference(state, trainer.is_frozen), train_state


def state_from_checkpoint(trainer: Trainer, params: Any, train_state: dict[str, Any]) -> _utils.TrainState:
    """Inverse of `checkpoint_items`."""
    saved_trainable, frozen = _utils.split_params(params, trainer.is_frozen)
    ema = None
    if "trainable_params" in train_state:
        ema = saved_trainable
        raw = params_io.flatten(train_state["trainable_params"])
    else:
        raw = saved_trainable
    return _utils.TrainState(
        step=train_state["step"],
        params=_utils.merge_params(raw, frozen),
        opt_state=train_state["opt_state"],
        ema_params=ema,
    )


def load_weights(config: _config.TrainConfig, params_shape: dict) -> dict[str, Any] | None:
    """Loaded weights as a flat dict (only the leaves the loader filled), or None to train from scratch."""
    loaded = config.weight_loader.load(params_shape)
    params_io.check_tree_matches(params_shape, loaded, what=f"weights from {config.weight_loader}")
    flat = {k: v for k, v in params_io.flatten(loaded).items() if not isinstance(v, jax.ShapeDtypeStruct)}
    return flat or None


# ------------------------------------------------------------------------------------------------ logging


def check_finite_loss(losses: np.ndarray, step: int, config: _config.TrainConfig) -> None:
    """Stops the run (before it saves NaN weights) when a loss since the last check is NaN or infinite."""
    if not np.all(np.isfinite(losses)):
        raise TrainingDivergedError(
            f"Loss became NaN/inf by step {step} of {config.name}/{config.exp_name}; lower the learning rate, "
            "check the data and norm stats, or --resume from the last good checkpoint."
        )


# ----------------------------------------------------------------------------------------------- the run


def train(config: _config.TrainConfig, *, progress: bool = True) -> _utils.TrainState:
    """Runs (or resumes) training; returns the final state."""
    mesh = _sharding.make_mesh(config.fsdp_devices)
    data_config = preflight(config, mesh)
    mngr, resuming = _checkpoints.initialize_checkpoint_dir(
        config.checkpoint_dir, keep_period=config.keep_period, overwrite=config.overwrite, resume=config.resume
    )
    wandb_run = _wandb_logging.WandbLogger(config, resuming)
    trainer = Trainer(config)
    rng = jax.random.key(config.seed)
    init_rng, train_rng = jax.random.split(rng)

    params_shape = config.model.params_shape()
    partial = None if resuming else load_weights(config, params_shape)
    state_shape = jax.eval_shape(trainer.init, init_rng, partial)
    state_sharding = _sharding.fsdp_sharding(state_shape, mesh)
    replicated = _sharding.replicated(mesh)

    if resuming:
        template = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shape, state_sharding
        )
        params_t, train_state_t = checkpoint_items(trainer, template)
        train_state_item, params, step = _checkpoints.restore(
            mngr, train_state_template=train_state_t, params_template=params_t
        )
        state = state_from_checkpoint(trainer, params, train_state_item)
        logger.info("Resumed from %s at step %d", mngr.directory, step)
    else:
        if partial:
            # Place loaded weights straight into their final shards (works across hosts; no single-device copy).
            shardings = params_io.flatten(state_sharding.params)
            partial = {
                k: jax.make_array_from_callback(v.shape, shardings[k], lambda idx, v=v: np.asarray(v[idx]))
                for k, v in partial.items()
            }
        init = jax.jit(trainer.init, out_shardings=state_sharding)
        state = init(init_rng, partial)
    del partial
    start_step = int(jax.device_get(state.step))
    logger.info(
        "Params: %s trainable of %s; mesh %s; %d processes",
        f"{_utils.count_params(_utils.split_params(state.params, trainer.is_frozen)[0]):,}",
        f"{_utils.count_params(state.params):,}",
        dict(mesh.shape),
        jax.process_count(),
    )

    data_sharding = _sharding.data_sharding(mesh)
    loader = _data_loader.create_data_loader(
        config,
        sharding=data_sharding,
        data_config=data_config,
        start_step=start_step,
        num_batches=max(0, config.num_train_steps - start_step),
    )
    step_fn = jax.jit(
        trainer.step,
        in_shardings=(replicated, state_sharding, data_sharding),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(1,),
    )
    norm_stats = (
        {data_config.asset_id: data_config.norm_stats} if data_config.norm_stats and data_config.asset_id else {}
    )

    def save(state, step):
        params, train_state = checkpoint_items(trainer, state)
        _checkpoints.save(mngr, step, params=params, train_state=train_state, norm_stats=norm_stats)

    pbar = tqdm.tqdm(
        total=config.num_train_steps,
        initial=start_step,
        dynamic_ncols=True,
        disable=not progress or jax.process_index() != 0,
    )
    infos: list[dict[str, jax.Array]] = []
    last_log, last_log_step = time.perf_counter(), start_step
    batches = iter(loader)
    for step in range(start_step, config.num_train_steps):
        batch = next(batches)
        state, info = step_fn(train_rng, state, batch)
        infos.append(info)
        pbar.update(1)
        is_last = step == config.num_train_steps - 1
        is_save = (step % config.save_interval == 0 and step > start_step) or is_last
        if step % config.log_interval == 0 or is_save:
            stacked = jax.device_get(jax.tree.map(lambda *x: jnp.stack(x), *infos))
            infos = []
            check_finite_loss(stacked["loss"], step, config)
            now = time.perf_counter()
            rate = (step + 1 - last_log_step) / max(now - last_log, 1e-9)
            last_log, last_log_step = now, step + 1
            metrics = {k: float(np.mean(v)) for k, v in stacked.items()}
            metrics["steps_per_s"] = rate
            metrics["lr"] = float(config.lr_schedule.create()(step))
            eta = (config.num_train_steps - step - 1) / max(rate, 1e-9)
            pbar.set_postfix(loss=f"{metrics['loss']:.4f}", it_s=f"{rate:.2f}", eta=f"{eta:.0f}s")
            logger.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            wandb_run.log(metrics, step)
        if is_save:
            save(state, step)
    pbar.close()
    mngr.wait_until_finished()
    wandb_run.finish()
    return state


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("absl", "jax._src.xla_bridge"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args, dist = _distributed.pop_distributed_flags(sys.argv[1:] if argv is None else argv)
    # Reuse compiled train steps across runs (as openpi does); JAX_COMPILATION_CACHE_DIR overrides the place.
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/jax"))
    try:
        _distributed.maybe_initialize_distributed(dist)
        config = _config.cli(args)
        train(config)
    except errors.UserError as e:
        logger.error("%s", e)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
