"""One trainer and one run loop for every model this repository trains (the pi0 policy and the value model).

Why one: the two models differ only in the loss (the policy's flow-matching loss vs the value model's per-bin
cross-entropy) and in an optional evaluation (the value model's validation Spearman). Everything else, from the
freeze rule and EMA to checkpoints, resuming, FSDP sharding, logging and the NaN stop, is the same code.

- `Trainer`: the pure, jittable pieces. `init` builds a `TrainState` from fresh parameters overwritten by loaded
  weights (frozen leaves cast to `frozen_dtype`); `step` differentiates the trainable leaves only, applies the
  optimizer and the EMA; `checkpoint_items` / `state_from_checkpoint` map a state to and from the openpi step
  layout (params/ = what serving loads, train_state/ = what resuming needs).
- `Task`: what a model brings to the loop (its `Trainer`, checks before compiling, weights, data loader, norm
  stats, optional evaluation and checkpoint extras). `PolicyTask` is here; the value model's is
  `openpi.training.value_train.ValueTask`.
- `run(task)`: the loop: checkpoint directory (fresh, --resume or --overwrite), weights placed straight into
  their shards and donated to the jitted init, the jitted step, a progress line with steps/s and ETA, one
  `TrainingDivergedError` when the loss stops being finite, saves, and the evaluation hook every `val_interval`.
- `train(config)`: a policy run from a `TrainConfig` (what `scripts/train.py` calls).
"""

from collections.abc import Callable
import dataclasses
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from openpi.models import params_io
from openpi.shared import atomic
from openpi.shared import errors
from openpi.training import checkpoints as _checkpoints
from openpi.training import config as _config
from openpi.training import data_loader as _data_loader
from openpi.training import distributed
from openpi.training import norm_stats as _norm_stats
from openpi.training import optimizer as _optimizer
from openpi.training import sharding as _sharding
from openpi.training import utils as _utils
from openpi.training import wandb_logging as _wandb_logging
from openpi.training import weight_loaders

logger = logging.getLogger("openpi.train")

# (params, rng, batch) -> (scalar loss, extra per-step metrics); differentiated w.r.t. the trainable leaves.
LossFn = Callable[[Any, jax.Array, dict[str, Any]], tuple[jax.Array, dict[str, jax.Array]]]


class TrainingDivergedError(errors.UserError, FloatingPointError):
    """The loss became NaN or infinite."""


# ------------------------------------------------------------------------------------------------ trainer


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Builds and steps `TrainState`s for one model: only `loss` is model-specific."""

    init_params: Callable[[jax.Array], Any]
    loss: LossFn
    is_frozen: Callable[[str], bool]
    tx: optax.GradientTransformation
    ema_decay: float | None = None
    # Frozen floating leaves are stored and used in this dtype (bf16 halves their memory and checkpoint size).
    frozen_dtype: Any = jnp.bfloat16

    def init(self, rng: jax.Array, partial_params: dict[str, Any] | None = None) -> _utils.TrainState:
        """Fresh params overwritten by `partial_params` (flat path -> array) where given; frozen leaves cast."""
        flat = params_io.flatten(self.init_params(rng))
        if partial_params:
            flat.update({k: jnp.asarray(v, flat[k].dtype) for k, v in partial_params.items()})
        dtype = jnp.dtype(self.frozen_dtype)
        flat = {
            k: v.astype(dtype) if self.is_frozen(k) and jnp.issubdtype(v.dtype, jnp.floating) else v
            for k, v in flat.items()
        }
        params = params_io.unflatten(flat)
        trainable, _ = _utils.split_params(params, self.is_frozen)
        opt_state = self.tx.init(params_io.unflatten(trainable))
        ema = dict(trainable) if self.ema_decay is not None else None
        return _utils.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state, ema_params=ema)

    def step(self, base_rng: jax.Array, state: _utils.TrainState, batch: dict[str, Any]):
        """One optimizer step; the step's randomness is `fold_in(base_rng, step)` (resumable bit for bit)."""
        rng = jax.random.fold_in(base_rng, state.step)
        trainable, frozen = _utils.split_params(state.params, self.is_frozen)

        def loss_fn(trainable):
            return self.loss(_utils.merge_params(trainable, frozen), rng, batch)

        (loss, extra), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        trainable_tree = params_io.unflatten(trainable)
        updates, opt_state = self.tx.update(params_io.unflatten(grads), state.opt_state, trainable_tree)
        new_trainable = params_io.flatten(optax.apply_updates(trainable_tree, updates))
        ema = state.ema_params
        if ema is not None:
            ema = _utils.ema_update(ema, new_trainable, self.ema_decay)
        new_state = state.replace(
            step=state.step + 1,
            params=_utils.merge_params(new_trainable, frozen),
            opt_state=opt_state,
            ema_params=ema,
        )
        info = {
            "loss": loss,
            **extra,
            "grad_norm": _utils.global_norm(grads),
            "param_norm": _utils.global_norm(new_trainable),
        }
        return new_state, info

    def inference_params(self, state: _utils.TrainState) -> Any:
        """Full params for serving and evaluation: the EMA of the trainable leaves when EMA is on."""
        return _utils.params_for_inference(state, self.is_frozen)

    def checkpoint_items(self, state: _utils.TrainState, *, with_frozen: bool = True) -> tuple[Any, dict[str, Any]]:
        """(params/ item, train_state/ item): EMA weights go to params/, raw trainable weights to train_state/.

        `with_frozen=False` leaves the frozen leaves out of params/ (a run that stores them once elsewhere).
        """
        trainable, frozen = _utils.split_params(state.params, self.is_frozen)
        train_state: dict[str, Any] = {"step": state.step, "opt_state": state.opt_state}
        if state.ema_params is not None:
            train_state["trainable_params"] = params_io.unflatten(trainable)
        served = dict(state.ema_params) if state.ema_params is not None else trainable
        params = _utils.merge_params(served, frozen if with_frozen else {})
        return params, train_state

    def state_from_checkpoint(
        self, params: Any, train_state: dict[str, Any], frozen: dict[str, Any] | None = None
    ) -> _utils.TrainState:
        """Inverse of `checkpoint_items`; `frozen` (flat) fills in the frozen leaves when params/ lacks them."""
        saved_trainable, saved_frozen = _utils.split_params(params, self.is_frozen)
        frozen = saved_frozen if frozen is None else frozen
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


# ----------------------------------------------------------------------------------------------- the task


class Task:
    """What one model brings to `run`. `config` has the run fields both TrainConfig and ValueTrainConfig share
    (name, seed, batch_size, num_train_steps, log/save intervals, keep_period, overwrite/resume, fsdp_devices,
    checkpoint_dir). Subclasses override the hooks they need; the defaults do nothing."""

    config: Any
    trainer: Trainer
    # Evaluate every this many steps (and after the last one) when set.
    val_interval: int | None = None
    # Metrics shown on the progress line besides loss, steps/s and ETA.
    progress_metrics: tuple[str, ...] = ()
    # True: params/ of each step holds only the trainable leaves; the frozen ones are restored by `load_frozen`.
    frozen_saved_once: bool = False
    # What to say when the loss diverges (after "Loss became NaN/inf by step S of NAME; ").
    divergence_hint: str = "lower the learning rate, check the data and norm stats"

    def preflight(self, mesh: jax.sharding.Mesh) -> None:
        """Everything that can be wrong with the inputs, checked before anything compiles."""

    def start(self, mngr, resuming: bool) -> None:
        """Called once the run directory exists (e.g. to compare or write run metadata)."""

    def load_weights(self, params_shape: Any) -> dict[str, Any] | None:
        """Pretrained weights (flat path -> array, only the leaves a loader filled), or None."""
        return None

    def load_frozen(self) -> dict[str, Any]:
        """The frozen leaves (flat) of a resumed run whose params/ lacks them (`frozen_saved_once`)."""
        raise NotImplementedError

    def after_init(self, state: _utils.TrainState) -> None:
        """Called after a fresh (not resumed) state is built, on every process."""

    def create_loader(self, *, sharding, start_step: int, num_batches: int) -> _data_loader.DataLoader:
        raise NotImplementedError

    def norm_stats_assets(self) -> dict[str, Any]:
        """{asset_id: norm stats} saved with every step (what serving or labelling normalises with)."""
        return {}

    def evaluate(self, state: _utils.TrainState) -> dict[str, float]:
        """Metrics on held-out data (called every `val_interval` steps)."""
        return {}

    def after_save(self, mngr, step: int) -> None:
        """Called after a step's checkpoint was handed to Orbax."""

    def metrics_logger(self, resuming: bool) -> Any:
        """An object with `log(metrics, step)` and `finish()`."""
        return _wandb_logging.WandbLogger(self.config, resuming)


@dataclasses.dataclass
class RunResult:
    state: _utils.TrainState
    # Evaluation metrics with their step, in order.
    val_history: list[dict[str, float]]


def check_finite_loss(losses: np.ndarray, step: int, run_name: str, hint: str = Task.divergence_hint) -> None:
    """Stops the run (before it saves NaN weights) when a loss since the last check is NaN or infinite."""
    if not np.all(np.isfinite(losses)):
        raise TrainingDivergedError(
            f"Loss became NaN/inf by step {step} of {run_name}; {hint}, or --resume from the last good checkpoint."
        )


def _place(flat: dict[str, Any], shardings: dict[str, jax.sharding.Sharding], dtypes=None) -> dict[str, jax.Array]:
    """Host arrays straight into their final shards (works across hosts; no single-device copy)."""

    def put(k, v):
        v = np.asarray(v) if dtypes is None else np.asarray(v, dtypes[k])
        return jax.make_array_from_callback(v.shape, shardings[k], lambda idx: v[idx])

    return {k: put(k, v) for k, v in flat.items()}


class ProgressLine:
    """The training loop's one progress line: tqdm's bar, step count and elapsed time, plus one rate and the ETA
    computed from it.

    tqdm's own rate and remaining time are left out: `pbar.update` runs when a step is dispatched, not when the
    device has finished it (jit is asynchronous), so tqdm would show a dispatch rate and an ETA that disagree with
    the real one. The rate shown is steps per second between two log points, measured after the losses of those
    steps were fetched from the device; the ETA is the remaining steps at that rate.
    """

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, total: int, initial: int = 0, *, disable: bool = False, file: Any = None):
        self._bar = tqdm.tqdm(
            total=total, initial=initial, dynamic_ncols=True, disable=disable, bar_format=self.BAR_FORMAT, file=file
        )

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def show(self, loss: float, steps_per_s: float | None, remaining_steps: int, **metrics: float) -> None:
        """`steps_per_s` None: no rate yet (the first interval, which includes compilation), so no ETA either."""
        extra = "".join(f", {k}={v:.3f}" for k, v in metrics.items())
        if steps_per_s is None:
            self._bar.set_postfix_str(f"loss={loss:.4f}{extra}, it/s after the first log interval")
            return
        eta = tqdm.tqdm.format_interval(remaining_steps / max(steps_per_s, 1e-9))
        self._bar.set_postfix_str(f"loss={loss:.4f}{extra}, {steps_per_s:.2f} it/s, eta {eta}")

    def __str__(self) -> str:
        return str(self._bar)

    def close(self) -> None:
        self._bar.close()


def run(task: Task, *, progress: bool = True) -> RunResult:
    """Runs (or resumes) training of `task`; returns the final state and the evaluation history."""
    config = task.config
    atomic.check_output_dir(config.checkpoint_dir)  # before the preflight reads the dataset and weights
    mesh = _sharding.make_mesh(config.fsdp_devices)
    task.preflight(mesh)
    run_dir = config.checkpoint_dir
    mngr, resuming = _checkpoints.initialize_checkpoint_dir(
        run_dir, keep_period=config.keep_period, overwrite=config.overwrite, resume=config.resume
    )
    metrics_logger = task.metrics_logger(resuming)
    task.start(mngr, resuming)
    trainer = task.trainer
    rng = jax.random.key(config.seed)
    init_rng, train_rng = jax.random.split(rng)

    partial = None if resuming else task.load_weights(jax.eval_shape(trainer.init_params, init_rng))
    state_shape = jax.eval_shape(trainer.init, init_rng, partial)
    state_sharding = _sharding.fsdp_sharding(state_shape, mesh)
    replicated = _sharding.replicated(mesh)

    if resuming:
        template = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shape, state_sharding
        )
        params_t, train_state_t = trainer.checkpoint_items(template, with_frozen=not task.frozen_saved_once)
        train_state_item, params, step = _checkpoints.restore(
            mngr, train_state_template=train_state_t, params_template=params_t
        )
        frozen = None
        if task.frozen_saved_once:
            _, frozen_t = _utils.split_params(template.params, trainer.is_frozen)
            loaded = task.load_frozen() if frozen_t else {}
            frozen = _place(
                loaded, {k: t.sharding for k, t in frozen_t.items()}, {k: t.dtype for k, t in frozen_t.items()}
            )
        state = trainer.state_from_checkpoint(params, train_state_item, frozen)
        logger.info("Resumed from %s at step %d", run_dir, step)
    else:
        if partial:
            partial = _place(partial, params_io.flatten(state_sharding.params))
        # Donating the loaded weights frees their memory as the state is built (on GPU/TPU, where it matters);
        # the CPU backend cannot reuse donated buffers and would warn "donated buffers were not usable" each run.
        donate = () if jax.default_backend() == "cpu" else (1,)
        init = jax.jit(trainer.init, out_shardings=state_sharding, donate_argnums=donate)
        state = init(init_rng, partial)
        task.after_init(state)
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
    loader = task.create_loader(
        sharding=data_sharding, start_step=start_step, num_batches=max(0, config.num_train_steps - start_step)
    )
    step_fn = jax.jit(
        trainer.step,
        in_shardings=(replicated, state_sharding, data_sharding),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(1,),
    )
    lr = _optimizer.learning_rate_fn(config.lr_schedule)
    norm_stats = task.norm_stats_assets()

    def save(state, step):
        params, train_state = trainer.checkpoint_items(state, with_frozen=not task.frozen_saved_once)
        _checkpoints.save(mngr, step, params=params, train_state=train_state, norm_stats=norm_stats)
        task.after_save(mngr, step)

    pbar = ProgressLine(config.num_train_steps, start_step, disable=not progress or jax.process_index() != 0)
    history: list[dict[str, float]] = []
    infos: list[dict[str, jax.Array]] = []
    last_log, last_log_step = time.perf_counter(), start_step
    batches = iter(loader)
    for step in range(start_step, config.num_train_steps):
        state, info = step_fn(train_rng, state, next(batches))
        infos.append(info)
        pbar.update(1)
        is_last = step == config.num_train_steps - 1
        is_save = (step % config.save_interval == 0 and step > start_step) or is_last
        is_val = task.val_interval is not None and ((step + 1) % task.val_interval == 0 or is_last)
        if step % config.log_interval == 0 or is_save or is_val:
            stacked = jax.device_get(jax.tree.map(lambda *x: jnp.stack(x), *infos))
            infos = []
            check_finite_loss(stacked["loss"], step, f"{config.name}/{config.exp_name}", task.divergence_hint)
            now = time.perf_counter()
            rate = (step + 1 - last_log_step) / max(now - last_log, 1e-9)
            last_log, last_log_step = now, step + 1
            metrics = {k: float(np.mean(v)) for k, v in stacked.items()}
            metrics["steps_per_s"] = rate
            metrics["lr"] = lr(step)
            if is_val:
                val = task.evaluate(state)
                metrics.update(val)
                if val:
                    history.append({"step": step + 1, **val})
            shown = {k: metrics[k] for k in task.progress_metrics if k in metrics}
            # The first interval includes compiling the step: its rate would promise an ETA of hours.
            measured = rate if step > start_step else None
            pbar.show(metrics["loss"], measured, config.num_train_steps - step - 1, **shown)
            logger.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            metrics_logger.log(metrics, step)
        if is_save:
            save(state, step)
    pbar.close()
    mngr.wait_until_finished()
    metrics_logger.finish()
    return RunResult(state=state, val_history=history)


# ------------------------------------------------------------------------------------------------- policy


def policy_trainer(config: _config.TrainConfig) -> Trainer:
    """The pi0 trainer: flow-matching loss per action step, averaged over the chunk, weighted per frame."""
    model = config.model.model()

    def loss(params, rng, batch):
        observation, actions, weights = _data_loader.batch_to_model_inputs(batch)
        per_step = model.compute_loss(params, rng, observation, actions, train=True)  # [B, H]
        return _utils.weighted_mean(jnp.mean(per_step, axis=-1), weights), {}

    return Trainer(
        init_params=model.init_params,
        loss=loss,
        is_frozen=config.get_freeze_filter(),
        tx=_optimizer.create_optimizer(config.optimizer, config.lr_schedule),
        ema_decay=config.ema_decay,
        frozen_dtype=jnp.bfloat16,  # openpi casts LoRA base weights to bf16
    )


def load_weights(loader: Any, params_shape: Any) -> dict[str, Any] | None:
    """`loader.load(params_shape)` as a flat dict (only the leaves it filled), or None to train from scratch.

    Policy and value runs both come through here, so every loader's result is checked against the model's shapes
    and dtypes before it is placed: a misshaped file fails with one sentence naming the leaf, not inside jit.
    """
    loaded = loader.load(params_shape)
    params_io.check_tree_matches(params_shape, loaded, what=f"weights from {loader}")
    flat = {k: v for k, v in params_io.flatten(loaded).items() if not isinstance(v, jax.ShapeDtypeStruct)}
    return flat or None


class PolicyTask(Task):
    """A policy run from a `TrainConfig`: the dataset is opened once, for the checks and the loader."""

    def __init__(self, config: _config.TrainConfig):
        self.config = config
        self.trainer = policy_trainer(config)
        self.data_config: _config.DataConfig | None = None
        self.dataset: Any = None

    def preflight(self, mesh: jax.sharding.Mesh) -> None:
        self.data_config, self.dataset = preflight(self.config, mesh)

    def load_weights(self, params_shape: Any) -> dict[str, Any] | None:
        return load_weights(self.config.weight_loader, params_shape)

    def create_loader(self, *, sharding, start_step: int, num_batches: int) -> _data_loader.DataLoader:
        return _data_loader.create_data_loader(
            self.config,
            sharding=sharding,
            data_config=self.data_config,
            dataset=self.dataset,
            start_step=start_step,
            num_batches=num_batches,
        )

    def norm_stats_assets(self) -> dict[str, Any]:
        dc = self.data_config
        return {dc.asset_id: dc.norm_stats} if dc is not None and dc.norm_stats and dc.asset_id else {}


def preflight(config: _config.TrainConfig, mesh: jax.sharding.Mesh) -> tuple[_config.DataConfig, Any]:
    """Checks the inputs of a policy run before compiling; returns (data config, the open dataset or None)."""
    if config.serving_twin_of is not None:
        raise errors.ConfigError(
            f"Config {config.name!r} is for serving (indicator dropout 0, so the model would never learn the "
            f"unconditional prompt that CFG needs); train {config.serving_twin_of!r} instead and serve its "
            f"checkpoints with {config.name!r}."
        )
    if config.num_train_steps < 1:
        raise errors.ConfigError(f"num_train_steps must be >= 1, got {config.num_train_steps}.")
    _sharding.check_batch_divisible(config.batch_size, mesh)
    weight_loaders.validate(config.weight_loader)
    data_config = config.create_data_config(train=True)
    if data_config.fake_data:
        return data_config, None
    if data_config.norm_stats is None:
        raise _config.missing_norm_stats_error(
            f"norm stats for config {config.name!r}", config.data.norm_stats_dirs(config.assets_dirs), config.name
        )
    from openpi.datasets import lerobot

    dataset = lerobot.LeRobotDataset.open(data_config.repo_id)
    _data_loader.check_policy_dataset(dataset, data_config)
    columns = {"state": getattr(config.data, "state_key", None), "actions": getattr(config.data, "action_key", None)}
    _norm_stats.check_fits_dataset(
        data_config.norm_stats,
        dataset,
        {k: v for k, v in columns.items() if v},
        source=_norm_stats.stats_file(config.data.norm_stats_dirs(config.assets_dirs)),
    )
    return data_config, dataset


def train(config: _config.TrainConfig, *, progress: bool = True) -> _utils.TrainState:
    """Runs (or resumes) a policy run; returns the final state."""
    return run(PolicyTask(config), progress=progress).state


def main(args: list[str]) -> _utils.TrainState:
    """`scripts/train.py`'s body: distributed flags, `<config> [--overrides]`, join the processes, train."""
    args, dist = distributed.pop_distributed_flags(args)
    config = _config.cli(args)  # before joining other processes: --help and bad flags need no coordinator
    # Reuse compiled train steps across runs (as openpi does); JAX_COMPILATION_CACHE_DIR overrides the place.
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/jax"))
    distributed.maybe_initialize_distributed(dist)
    return train(config)
