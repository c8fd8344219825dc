"""Training, validating, checkpointing and loading the value model.

The run uses the policy trainer's machinery: `sharding` (mesh ("batch", "fsdp"), FSDP shardings), the generic
`data_loader`, `checkpoints` (Orbax manager, openpi step layout), `optimizer` and `utils.TrainState`.

Checkpoint layout (`<run dir>` = --checkpoint_dir):

    value_model.json           model config (cameras, prompt format, bins, ...) + data inputs; also in every step
    frozen_params/             the frozen backbones, written ONCE per run (openpi params layout, bf16 when the
    frozen_params.json           model computes in bf16) with a sha256 over the arrays, checked on every load
    <step>/params/             {"params": trainable weights}: their EMA when EMA is on (what labelling uses)
    <step>/train_state/        step, optimizer state, raw trainable weights (when EMA is on)
    <step>/assets/<id>/norm_stats.json   state normalisation used by the data pipeline
    <step>/value_model.json

So a step of the full-size model with frozen backbones holds ~1.3M trainable weights (~20 MB with Adam and EMA)
instead of re-saving 680M frozen weights every time, and resuming restores Adam's moments.

For the relabelling script: `load_value_checkpoint(dir) -> (ValueModelConfig, params)`, `load_value_inputs(dir)`
(the data side: cameras, state key, prompt, norm stats) and `predict_values(model_config, params, batch) -> [B]`.
"""

from collections.abc import Callable
import dataclasses
import functools
import hashlib
import json
import logging
import os
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from openpi.models import model as _model
from openpi.models import params_io
from openpi.models import value_model as _value_model
from openpi.shared import atomic
from openpi.shared import errors
from openpi.shared import normalize as _normalize
from openpi.training import checkpoints as _checkpoints
from openpi.training import optimizer as _optimizer
from openpi.training import sharding as _sharding
from openpi.training import utils as _utils
from openpi.training import value_config as _value_config
from openpi.training import value_data
from openpi.training import value_weights

logger = logging.getLogger("openpi.train_value")

CONFIG_FILE = "value_model.json"
FROZEN_DIR = "frozen_params"
FROZEN_META = "frozen_params.json"
ASSET_ID = "value_data"


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


def _preprocess(model: _value_model.ValueModelConfig, rng, batch: dict, *, train: bool) -> _model.Observation:
    obs = _model.Observation.from_dict(batch)
    return _model.preprocess_observation(
        rng, obs, train=train, image_keys=model.cameras, image_resolution=model.image_resolution
    )


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


# ------------------------------------------------------------------------------------ checkpoint files


def tokenizer_fingerprint(tokenizer_path: str | None) -> dict[str, Any]:
    """sha256 and size of the Gemma3 SentencePiece model, so a labeller cannot use a different one."""
    from openpi.models import tokenizer as _tokenizer

    tok = _tokenizer.Gemma3Tokenizer(tokenizer_path, max_len=1)
    return {"sha256": hashlib.sha256(tok.model_path.read_bytes()).hexdigest(), "vocab_size": tok.vocab_size}


def checkpoint_json(config: _value_config.ValueTrainConfig) -> str:
    """What a labeller must reproduce: the model config, the data inputs (cameras, state, prompt), the tokenizer."""
    data = config.data
    return json.dumps(
        {
            "tokenizer": tokenizer_fingerprint(config.tokenizer_path),
            "model": dataclasses.asdict(config.model),
            "data": {
                "cameras": [list(c) for c in data.cameras],
                "state_key": data.state_key,
                "value_column": data.value_column,
                "prompt_from_task": data.prompt_from_task,
                "default_prompt": data.default_prompt,
                "robot": data.robot,
            },
            "config_name": config.name,
            "norm_stats_asset": ASSET_ID,
        },
        indent=2,
        sort_keys=True,
    )


def tree_checksum(flat: dict[str, Any]) -> str:
    """sha256 over sorted paths, dtypes, shapes and bytes of a flat dict of arrays."""
    digest = hashlib.sha256()
    for path in sorted(flat):
        arr = np.ascontiguousarray(np.asarray(flat[path]))
        digest.update(f"{path}|{arr.dtype.str}|{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def save_frozen(run_dir: pathlib.Path, frozen: dict[str, Any], sources: dict[str, Any]) -> None:
    """Writes the frozen backbones once (process 0; atomic) with their checksum and where they came from."""
    if not frozen:
        return
    host = {k: _to_host(v) for k, v in frozen.items()}  # collective on multi-host: every process gathers
    if jax.process_index() != 0:
        return
    params_io.save_params(run_dir / FROZEN_DIR, params_io.unflatten(host), overwrite=True)
    meta = {"sha256": tree_checksum(host), "num_arrays": len(host), "num_params": int(sum(a.size for a in host.values())),
            "sources": sources}  # fmt: skip
    atomic.write_text(run_dir / FROZEN_META, json.dumps(meta, indent=2, sort_keys=True))


def _to_host(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def load_frozen(run_dir: pathlib.Path, *, verify: bool = True) -> dict[str, np.ndarray]:
    """The frozen backbones stored with a run (flat path -> array); checksum verified."""
    meta_path = run_dir / FROZEN_META
    if not meta_path.is_file():
        raise errors.CheckpointError(
            f"{run_dir} has no {FROZEN_META}: the run's frozen backbones are missing; copy the whole run directory."
        )
    meta = json.loads(meta_path.read_text())
    flat = params_io.flatten(params_io.restore_params(run_dir / FROZEN_DIR, restore_type=np.ndarray))
    if verify and tree_checksum(flat) != meta["sha256"]:
        raise errors.CheckpointError(
            f"The frozen backbones in {run_dir / FROZEN_DIR} do not match their checksum in {meta_path}; the files "
            "are damaged or were replaced: restore them from the original run."
        )
    return flat


def _read_checkpoint_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise errors.CheckpointError(f"Cannot read {path} ({e}); the value checkpoint is damaged.") from e


def _step_meta(step_dir: pathlib.Path) -> dict:
    """The step's own value_model.json: the one description of what these weights were trained with.

    The run-root copy is written when a run starts and is not consulted here: after a resume it may describe
    an earlier configuration.
    """
    path = step_dir / CONFIG_FILE
    if not path.is_file():
        raise errors.CheckpointError(
            f"{path} is missing: step {step_dir.name} was not saved completely; pass another step or retrain."
        )
    return _read_checkpoint_json(path)


def _locate(checkpoint: str | os.PathLike, step: int | None) -> tuple[pathlib.Path, pathlib.Path]:
    """(run dir, step dir) from a run directory (latest or given step) or a step directory."""
    path = pathlib.Path(checkpoint).expanduser().resolve()
    if not path.is_dir():
        raise errors.CheckpointError(f"Value checkpoint {path} does not exist; pass a value run or step directory.")
    if (path / _checkpoints.PARAMS).is_dir() and (path.parent / CONFIG_FILE).is_file():
        return path.parent, path
    if not (path / CONFIG_FILE).is_file():
        raise errors.CheckpointError(
            f"{path} is not a value-model checkpoint (no {CONFIG_FILE}); pass the --checkpoint_dir of "
            "scripts/train_value.py or one of its step folders."
        )
    steps = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit() and (p / _checkpoints.PARAMS).is_dir())
    if not steps:
        raise errors.CheckpointError(f"{path} holds no completed training step yet.")
    if step is None:
        step = steps[-1]
    if step not in steps:
        raise errors.CheckpointError(f"{path} has no step {step} (steps: {steps}).")
    return path, path / str(step)


def load_value_checkpoint(
    checkpoint: str | os.PathLike, *, use_ema: bool = True, step: int | None = None
) -> tuple[_value_model.ValueModelConfig, dict]:
    """(model config, full params) of a value run (latest step) or of one of its step directories.

    `use_ema` picks the EMA weights (saved as params/) or the raw trainable weights (train_state/); they are the
    same when the run had no EMA. Frozen backbones come from the run's frozen_params/ (checksum verified).
    """
    run_dir, step_dir = _locate(checkpoint, step)
    meta = _step_meta(step_dir)
    model = _value_model.ValueModelConfig.from_json(json.dumps(meta["model"]), source=str(step_dir / CONFIG_FILE))
    trainable = params_io.flatten(params_io.restore_params(step_dir / _checkpoints.PARAMS, restore_type=np.ndarray))
    if not use_ema:
        raw = _restore_raw_trainable(step_dir)
        if raw is not None:
            trainable = raw
    frozen = load_frozen(run_dir) if (run_dir / FROZEN_META).is_file() else {}
    params = params_io.unflatten({**frozen, **trainable})
    expected = model.abstract_params()
    params_io.check_tree_matches(expected, params, check_dtypes=False, what=f"value checkpoint {step_dir}")
    return model, params


def _restore_raw_trainable(step_dir: pathlib.Path) -> dict | None:
    """The raw (non-EMA) trainable weights from train_state/, or None when the run had no EMA."""
    import orbax.checkpoint as ocp

    path = step_dir / _checkpoints.TRAIN_STATE
    with ocp.PyTreeCheckpointer() as ckptr:
        tree = params_io._tree_metadata(ckptr.metadata(path))
        if "trainable_params" not in tree:
            return None
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        out = ckptr.restore(path, args=ocp.args.PyTreeRestore(item=tree, restore_args=restore_args))
    return params_io.flatten(out["trainable_params"])


@dataclasses.dataclass(frozen=True)
class ValueInputs:
    """The data side of a value checkpoint: rebuild the exact item pipeline the model was trained with."""

    data: _value_config.ValueDataConfig
    norm_stats: dict[str, _normalize.NormStats] | None
    tokenizer: dict[str, Any] | None = None

    def item_factory(
        self,
        model: _value_model.ValueModelConfig,
        *,
        repo_id: str | None = None,
        tokenizer_path: str | None = None,
        with_targets: bool = False,
    ) -> value_data.ValueItemFactory:
        """Items exactly as in training (without the `value` target unless `with_targets`)."""
        if self.tokenizer is not None:
            found = tokenizer_fingerprint(tokenizer_path)
            if found["sha256"] != self.tokenizer["sha256"]:
                raise errors.ConfigError(
                    f"The tokenizer {tokenizer_path or 'in the openpi cache'} is not the one this value model was "
                    f"trained with (sha256 {found['sha256'][:12]}... vs {self.tokenizer['sha256'][:12]}...); pass "
                    "the training run's --tokenizer_path."
                )
        data = self.data if repo_id is None else dataclasses.replace(self.data, repo_id=repo_id)
        return value_data.ValueItemFactory(data, model, self.norm_stats, tokenizer_path, with_targets=with_targets)


def load_value_inputs(checkpoint: str | os.PathLike, *, step: int | None = None) -> ValueInputs:
    _, step_dir = _locate(checkpoint, step)
    saved = _step_meta(step_dir)
    meta = saved["data"]
    data = _value_config.ValueDataConfig(
        repo_id=None,
        cameras=tuple((str(a), str(b)) for a, b in meta["cameras"]),
        state_key=meta["state_key"],
        value_column=meta["value_column"],
        prompt_from_task=meta["prompt_from_task"],
        default_prompt=meta["default_prompt"],
        robot=meta.get("robot", "yam"),  # checkpoints written before the field existed are all YAM
    )
    # Every step is saved with its state stats; without them the labeller would feed unnormalised state.
    try:
        norm_stats = _checkpoints.restore_norm_stats(step_dir, ASSET_ID)
    except errors.CheckpointError as e:
        raise errors.CheckpointError(
            f"The value checkpoint step {step_dir} has no state norm stats (assets/{ASSET_ID}/norm_stats.json): "
            f"{e} Copy the whole step directory from the training run."
        ) from e
    return ValueInputs(data=data, norm_stats=norm_stats, tokenizer=saved.get("tokenizer"))


@functools.lru_cache(maxsize=8)
def _predict_fn(model: _value_model.ValueModelConfig):
    module = model.module()

    @jax.jit
    def predict(params, batch):
        logits = module.apply({"params": params}, _preprocess(model, None, batch, train=False))
        return _value_model.expected_value(logits, model.v_min, model.v_max)

    return predict


def predict_values(model: _value_model.ValueModelConfig, params: dict, batch: dict[str, Any]) -> jax.Array:
    """Expected values [B] for a batch of value-data items (jitted once per model config and batch shape)."""
    return _predict_fn(model)(params, batch)


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
