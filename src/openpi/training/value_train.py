"""Training, validating, checkpointing and loading the value model.

The run uses the policy trainer's machinery: `sharding` (mesh ("batch", "fsdp"), FSDP shardings), the generic
`data_loader`, `checkpoints` (Orbax manager, openpi step layout), `optimizer` and `utils.TrainState`.

The checkpoint format and inference loading (what the relabeller needs) live in `value_checkpoint`; this
module keeps the trainer, the freeze rule, validation metrics and the run.
"""

from collections.abc import Callable
import dataclasses
import functools
import json
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from openpi.models import params_io
from openpi.models import value_model as _value_model
from openpi.shared import atomic
from openpi.shared import errors
from openpi.training import checkpoints as _checkpoints
from openpi.training import optimizer as _optimizer
from openpi.training import sharding as _sharding
from openpi.training import utils as _utils
from openpi.training import value_config as _value_config
from openpi.training import value_data
from openpi.training import value_weights

# Re-exported while the trainer is being restructured; new code imports these from value_checkpoint.
from openpi.training.value_checkpoint import ASSET_ID
from openpi.training.value_checkpoint import CONFIG_FILE
from openpi.training.value_checkpoint import FROZEN_DIR  # noqa: F401
from openpi.training.value_checkpoint import FROZEN_META  # noqa: F401
from openpi.training.value_checkpoint import ValueInputs  # noqa: F401
from openpi.training.value_checkpoint import _locate  # noqa: F401
from openpi.training.value_checkpoint import _predict_fn  # noqa: F401
from openpi.training.value_checkpoint import _read_checkpoint_json
from openpi.training.value_checkpoint import _restore_raw_trainable  # noqa: F401
from openpi.training.value_checkpoint import _step_meta  # noqa: F401
from openpi.training.value_checkpoint import _to_host  # noqa: F401
from openpi.training.value_checkpoint import checkpoint_json
from openpi.training.value_checkpoint import load_frozen
from openpi.training.value_checkpoint import load_value_checkpoint  # noqa: F401
from openpi.training.value_checkpoint import load_value_inputs  # noqa: F401
from openpi.training.value_checkpoint import predict_values  # noqa: F401
from openpi.training.value_checkpoint import preprocess as _preprocess
from openpi.training.value_checkpoint import save_frozen
from openpi.training.value_checkpoint import tokenizer_fingerprint  # noqa: F401
from openpi.training.value_checkpoint import tree_checksum  # noqa: F401

logger = logging.getLogger("openpi.train_value")


class TrainingDivergedError(errors.UserError, FloatingPointError):
    """The loss became NaN or infinite."""


# -------------------------------------------------------------------------------------------- freezing


def freeze_filter(freeze_mode: str) -> Callable[[str], bool]:
    """Path ('/'-joined) -> frozen? `img/head` (the projection into Gemma3) and `value_head` always train.

    all_backbones: SigLIP and Gemma3 frozen. siglip_only: SigLIP frozen, Gemma3 trains. none: everything trains.
    """

    def siglip(path: str) -> bool:
        return path.startswith("img/") and not path.startswith("img/head/")

    if freeze_mode == "all_backbones":
        return lambda path: siglip(path) or path.startswith("llm/")
    if freeze_mode == "siglip_only":
        return siglip
    if freeze_mode == "none":
        return lambda path: False
    raise errors.ConfigError(f"freeze_mode {freeze_mode!r} is not one of {_value_model.FREEZE_MODES}.")


# ------------------------------------------------------------------------------------------ the trainer


@dataclasses.dataclass(frozen=True)
class ValueTrainer:
    """Pure pieces of a run: module, optimizer, freeze rule; builds and steps `TrainState`s."""

    config: _value_config.ValueTrainConfig

    @functools.cached_property
    def module(self) -> _value_model.ValueModel:
        return self.config.model.module()

    @functools.cached_property
    def is_frozen(self) -> Callable[[str], bool]:
        return freeze_filter(self.config.model.freeze_mode)

    @functools.cached_property
    def tx(self) -> optax.GradientTransformation:
        return _optimizer.create_optimizer(self.config.optimizer, self.config.lr_schedule)

    @property
    def frozen_dtype(self):
        # Frozen backbones are stored and used in the compute dtype (bf16 halves memory and checkpoint size).
        return jnp.dtype(self.config.model.dtype)

    def init(self, rng: jax.Array, partial_params: dict[str, Any] | None = None) -> _utils.TrainState:
        """Fresh params, overwritten by `partial_params` (flat path -> array) where given; frozen leaves cast."""
        flat = params_io.flatten(self.config.model.init_params(rng))
        if partial_params:
            flat.update({k: jnp.asarray(v, flat[k].dtype) for k, v in partial_params.items()})
        flat = {
            k: v.astype(self.frozen_dtype) if self.is_frozen(k) and jnp.issubdtype(v.dtype, jnp.floating) else v
            for k, v in flat.items()
        }
        params = params_io.unflatten(flat)
        trainable, _ = _utils.split_params(params, self.is_frozen)
        opt_state = self.tx.init(params_io.unflatten(trainable))
        ema = dict(trainable) if self.config.ema_decay is not None else None
        return _utils.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state, ema_params=ema)

    def step(self, base_rng: jax.Array, state: _utils.TrainState, batch: dict[str, Any]):
        rng = jax.random.fold_in(base_rng, state.step)
        model = self.config.model
        obs = _preprocess(model, rng, batch, train=self.config.data.augment)
        targets = batch[value_data.VALUE_KEY]
        trainable, frozen = _utils.split_params(state.params, self.is_frozen)

        def loss_fn(trainable):
            logits = self.module.apply({"params": _utils.merge_params(trainable, frozen)}, obs)
            return _value_model.value_loss(logits, targets, v_min=model.v_min, v_max=model.v_max), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        trainable_tree = params_io.unflatten(trainable)
        updates, opt_state = self.tx.update(params_io.unflatten(grads), state.opt_state, trainable_tree)
        new_trainable = params_io.flatten(optax.apply_updates(trainable_tree, updates))
        ema = state.ema_params
        if ema is not None:
            ema = _utils.ema_update(ema, new_trainable, self.config.ema_decay)
        pred = _value_model.expected_value(logits, model.v_min, model.v_max)
        info = {
            "loss": loss,
            "mae": jnp.mean(jnp.abs(pred - targets)),
            "grad_norm": optax.global_norm(grads),
            "param_norm": optax.global_norm(new_trainable),
        }
        new_state = state.replace(
            step=state.step + 1,
            params=_utils.merge_params(new_trainable, frozen),
            opt_state=opt_state,
            ema_params=ema,
        )
        return new_state, info

    def eval_step(self, params: dict, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """Per-frame predicted value and cross-entropy (no augmentation)."""
        model = self.config.model
        logits = self.module.apply({"params": params}, _preprocess(model, None, batch, train=False))
        targets = batch[value_data.VALUE_KEY]
        return {
            "pred": _value_model.expected_value(logits, model.v_min, model.v_max),
            "ce": _value_model.value_loss(logits, targets, v_min=model.v_min, v_max=model.v_max, reduce=False),
            "target": jnp.asarray(targets, jnp.float32),
        }

    def inference_params(self, state: _utils.TrainState) -> dict:
        """Full params for evaluation: EMA of the trainable leaves when EMA is on."""
        return _utils.params_for_inference(state, self.is_frozen)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def validation_metrics(outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """CE, MAE of the expected value, and Spearman(pred, target) over the validation frames."""
    pred, target = outputs["pred"], outputs["target"]
    return {
        "val_ce": float(np.mean(outputs["ce"])),
        "val_mae": float(np.mean(np.abs(pred - target))),
        "val_spearman": spearman(pred, target),
    }


# ------------------------------------------------------------------------------------------------ the run


@dataclasses.dataclass
class RunResult:
    state: _utils.TrainState
    val_history: list[dict[str, float]]


def _check_tokenizer(config: _value_config.ValueTrainConfig) -> None:
    from openpi.models import tokenizer as _tokenizer

    try:
        _tokenizer.Gemma3Tokenizer(config.tokenizer_path, max_len=config.model.max_token_len)
    except errors.CheckpointError as e:
        raise errors.CheckpointError(f"{e} (flag: --tokenizer_path)") from e


def weight_loader(config: _value_config.ValueTrainConfig) -> value_weights.ValueWeightLoader:
    if not config.load_pretrained:
        return value_weights.ValueWeightLoader()
    return value_weights.ValueWeightLoader.from_env(config.siglip_path, config.gemma3_path)


def evaluate(trainer: ValueTrainer, eval_fn, params, loader, n_frames: int) -> dict[str, float]:
    """Runs the validation loader once; metrics over the first `n_frames` predictions (the rest is padding)."""
    outs = [jax.device_get(eval_fn(params, batch)) for batch in loader]
    merged = {k: np.concatenate([o[k] for o in outs])[:n_frames] for k in outs[0]}
    del trainer
    return validation_metrics(merged)


def train(
    config: _value_config.ValueTrainConfig,
    *,
    progress: bool = True,
    make_metrics_logger: Callable[[_value_config.ValueTrainConfig, bool], Any] | None = None,
) -> RunResult:
    """Runs (or resumes) value-model training; returns the final state and the validation history.

    `make_metrics_logger(config, resuming)` returns an object with `log(metrics, step)` and `finish()` (the
    training script passes scripts/train.py's wandb wrapper); it is created once the run directory exists.
    """
    import tqdm

    from openpi.datasets import lerobot

    mesh = _sharding.make_mesh(config.fsdp_devices)
    _sharding.check_batch_divisible(config.batch_size, mesh)
    if config.data.repo_id is None:
        raise errors.ConfigError("No dataset configured; pass --data_dir=<LeRobot dataset root>.")
    dataset = lerobot.LeRobotDataset.open(config.data.repo_id)
    value_data.check_dataset(dataset, config.data)
    _check_tokenizer(config)
    loader_weights = weight_loader(config)
    run_dir = config.checkpoint_dir
    if not (config.resume and run_dir.is_dir()):
        loader_weights.validate()

    train_eps, val_eps = value_data.split_episodes(
        dataset.num_episodes, config.data.val_fraction, config.data.split_seed
    )
    train_frames = value_data.episode_frames(dataset, train_eps)
    val_frames = value_data.validation_frames(value_data.episode_frames(dataset, val_eps), config.val_max_frames)
    logger.info(
        "Dataset %s: %d train episodes (%d frames), %d validation episodes (%d frames evaluated)",
        dataset.root, len(train_eps), len(train_frames), len(val_eps), len(val_frames),
    )  # fmt: skip

    mngr, resuming = _checkpoints.initialize_checkpoint_dir(
        run_dir, keep_period=config.keep_period, overwrite=config.overwrite, resume=config.resume
    )
    metrics_logger = make_metrics_logger(config, resuming) if make_metrics_logger else None
    if resuming:
        latest = run_dir / str(mngr.latest_step())
        saved_path = latest / CONFIG_FILE if (latest / CONFIG_FILE).is_file() else run_dir / CONFIG_FILE
        saved = _read_checkpoint_json(saved_path)
        current = json.loads(checkpoint_json(config))
        if saved["model"] != current["model"]:
            raise errors.ConfigError(
                f"--resume: the model config differs from the one in {saved_path} (cameras, prompt "
                "format, variants or freeze mode); resume with the same config or start a new --checkpoint_dir."
            )
        # The data inputs (camera columns, state key, prompt) and the tokenizer are part of what the weights
        # learnt: a run that changed them half-way describes neither configuration.
        for part, what in (("data", "data inputs (camera columns, state key, prompt)"), ("tokenizer", "tokenizer")):
            if (part in saved or part == "data") and saved.get(part) != current[part]:
                raise errors.ConfigError(
                    f"--resume: the {what} differ from those in {saved_path}; resume with the same ones or start "
                    "a new --checkpoint_dir."
                )
        norm_stats = _checkpoints.restore_norm_stats(run_dir / str(mngr.latest_step()), ASSET_ID)
    else:
        norm_stats = value_data.state_norm_stats(dataset, config.data, train_frames)
        if jax.process_index() == 0:
            atomic.write_text(run_dir / CONFIG_FILE, checkpoint_json(config))

    trainer = ValueTrainer(config)
    rng = jax.random.key(config.seed)
    init_rng, train_rng = jax.random.split(rng)
    replicated = _sharding.replicated(mesh)

    partial = None
    if not resuming:
        shapes = jax.eval_shape(config.model.init_params, init_rng)
        loaded = loader_weights.load(shapes)
        partial = {k: v for k, v in params_io.flatten(loaded).items() if not isinstance(v, jax.ShapeDtypeStruct)}
        partial = partial or None
    state_shape = jax.eval_shape(trainer.init, init_rng, partial)
    state_sharding = _sharding.fsdp_sharding(state_shape, mesh)

    def checkpoint_items(state):
        trainable, _ = _utils.split_params(state.params, trainer.is_frozen)
        params = dict(state.ema_params) if state.ema_params is not None else trainable
        train_state = {"step": state.step, "opt_state": state.opt_state}
        if state.ema_params is not None:
            train_state["trainable_params"] = params_io.unflatten(trainable)
        return params_io.unflatten(params), train_state

    if resuming:
        template = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shape, state_sharding
        )
        params_t, train_state_t = checkpoint_items(template)
        train_state_item, params, step = _checkpoints.restore(
            mngr, train_state_template=train_state_t, params_template=params_t
        )
        _, frozen_t = _utils.split_params(template.params, trainer.is_frozen)
        frozen = load_frozen(run_dir) if frozen_t else {}
        frozen = {k: jax.device_put(np.asarray(v, frozen_t[k].dtype), frozen_t[k].sharding) for k, v in frozen.items()}
        saved = params_io.flatten(params)
        if "trainable_params" in train_state_item:
            raw, ema = params_io.flatten(train_state_item["trainable_params"]), saved
        else:
            raw, ema = saved, None
        state = _utils.TrainState(
            step=train_state_item["step"],
            params=_utils.merge_params(raw, frozen),
            opt_state=train_state_item["opt_state"],
            ema_params=ema,
        )
        logger.info("Resumed from %s at step %d", run_dir, step)
    else:
        state = jax.jit(trainer.init, out_shardings=state_sharding)(init_rng, partial)
        _, frozen = _utils.split_params(state.params, trainer.is_frozen)
        sources = {"siglip": loader_weights.siglip_path, "gemma3": loader_weights.gemma3_path}
        save_frozen(run_dir, frozen, sources)
        _checkpoints._sync("value_frozen")
    del partial
    start_step = int(jax.device_get(state.step))
    logger.info(
        "Value model: %s trainable of %s params (freeze_mode=%s); mesh %s; %d processes",
        f"{_utils.count_params(_utils.split_params(state.params, trainer.is_frozen)[0]):,}",
        f"{_utils.count_params(state.params):,}",
        config.model.freeze_mode,
        dict(mesh.shape),
        jax.process_count(),
    )

    data_sharding = _sharding.data_sharding(mesh)
    factory = value_data.ValueItemFactory(config.data, config.model, norm_stats, config.tokenizer_path)
    loader = value_data.create_loader(
        factory, train_frames, batch_size=config.batch_size, seed=config.seed, shuffle=True,
        num_workers=config.num_workers, sharding=data_sharding, start_step=start_step,
        num_batches=max(0, config.num_train_steps - start_step),
    )  # fmt: skip
    step_fn = jax.jit(
        trainer.step,
        in_shardings=(replicated, state_sharding, data_sharding),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(1,),
    )
    eval_fn = jax.jit(trainer.eval_step, out_shardings=replicated)
    n_val_batches = -(-len(val_frames) // config.batch_size) if len(val_frames) else 0

    def run_validation(state) -> dict[str, float]:
        if not n_val_batches:
            return {}
        val_loader = value_data.create_loader(
            factory, val_frames, batch_size=config.batch_size, seed=0, shuffle=False,
            num_workers=config.num_workers, sharding=data_sharding, num_batches=n_val_batches,
        )  # fmt: skip
        return evaluate(trainer, eval_fn, trainer.inference_params(state), val_loader, len(val_frames))

    def save(state, step):
        params, train_state = checkpoint_items(state)
        _checkpoints.save(mngr, step, params=params, train_state=train_state, norm_stats={ASSET_ID: norm_stats})
        mngr.wait_until_finished()
        if jax.process_index() == 0:
            atomic.write_text(run_dir / str(step) / CONFIG_FILE, checkpoint_json(config))

    pbar = tqdm.tqdm(
        total=config.num_train_steps, initial=start_step, dynamic_ncols=True,
        disable=not progress or jax.process_index() != 0,
    )  # fmt: skip
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
        is_val = (step + 1) % config.val_interval == 0 or is_last
        if step % config.log_interval == 0 or is_save or is_val:
            stacked = jax.device_get(jax.tree.map(lambda *x: jnp.stack(x), *infos))
            infos = []
            if not np.all(np.isfinite(stacked["loss"])):
                raise TrainingDivergedError(
                    f"Value loss became NaN/inf by step {step} of {config.name}; lower --peak_lr, check the "
                    "value_label column, or --resume from the last good checkpoint."
                )
            now = time.perf_counter()
            rate = (step + 1 - last_log_step) / max(now - last_log, 1e-9)
            last_log, last_log_step = now, step + 1
            metrics = {k: float(np.mean(v)) for k, v in stacked.items()}
            metrics["steps_per_s"] = rate
            if is_val:
                val = run_validation(state)
                metrics.update(val)
                if val:
                    history.append({"step": step + 1, **val})
            pbar.set_postfix(
                loss=f"{metrics['loss']:.3f}", it_s=f"{rate:.2f}",
                **({"val_rho": f"{metrics['val_spearman']:.3f}"} if "val_spearman" in metrics else {}),
            )  # fmt: skip
            logger.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            if metrics_logger is not None:
                metrics_logger.log(metrics, step)
        if is_save:
            save(state, step)
    pbar.close()
    mngr.wait_until_finished()
    if metrics_logger is not None:
        metrics_logger.finish()
    return RunResult(state=state, val_history=history)
