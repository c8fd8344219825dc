"""The value model's part of training: its freeze rule, its loss, its validation (Spearman) and the checkpoint
extras of a value run. The loop, the optimizer step, EMA, checkpoints and resuming are `openpi.training.trainer`,
the same code that trains the policy; this module only plugs the value model into it (`ValueTask`).

What differs from the policy and why:
- loss: cross-entropy of the 201-bin value distribution against the frame's `value_label` (+ the MAE of the
  expected value as a metric), instead of the flow-matching loss;
- evaluation: every `val_interval` steps the held-out episodes are scored (CE, MAE, Spearman of predicted vs
  target value), because a value model that only memorises its training episodes labels new data badly;
- checkpoint extras: the frozen backbones are written once per run (`value_checkpoint.save_frozen`) and each step
  saves only the trainable weights, plus `value_model.json` (what a labeller must reproduce). The format and
  inference loading are `openpi.training.value_checkpoint`.

The levers users reach for when a value model memorises (all off by default, so the YAM configs train as before):
SigLIP at a fraction of the learning rate (`siglip_lr_scale`; freezing it is `freeze_mode`), steps that follow the
data (`num_train_epochs`, resolved in `train` once the training episodes are known), the best validation step
instead of the last (`early_stopping`), and HL-Gauss targets instead of two-hot (`value_target`).
"""

from collections.abc import Callable
import json
import logging
import pathlib
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
from openpi.training import config as _config
from openpi.training import data_loader as _data_loader
from openpi.training import distributed
from openpi.training import norm_stats as _norm_stats
from openpi.training import optimizer as _optimizer
from openpi.training import sharding as _sharding
from openpi.training import trainer as _trainer
from openpi.training import utils as _utils
from openpi.training import value_checkpoint
from openpi.training import value_config as _value_config
from openpi.training import value_data
from openpi.training import value_weights

logger = logging.getLogger("openpi.train_value")
EARLY_STOPPING_FILE = "early_stopping.json"


# -------------------------------------------------------------------------------------------- freezing


def is_siglip(path: str) -> bool:
    """The pretrained SigLIP tower ('/'-joined path), without `img/head`: that projection into Gemma3 is new."""
    return path.startswith("img/") and not path.startswith("img/head/")


def freeze_filter(freeze_mode: str) -> Callable[[str], bool]:
    """Path ('/'-joined) -> frozen? `img/head` (the projection into Gemma3) and `value_head` always train.

    all_backbones: SigLIP and Gemma3 frozen. siglip_only: SigLIP frozen, Gemma3 trains. none: everything trains.
    """
    siglip = is_siglip
    if freeze_mode == "all_backbones":
        return lambda path: siglip(path) or path.startswith("llm/")
    if freeze_mode == "siglip_only":
        return siglip
    if freeze_mode == "none":
        return lambda path: False
    raise errors.ConfigError(f"freeze_mode {freeze_mode!r} is not one of {_value_model.FREEZE_MODES}.")


# ------------------------------------------------------------------------------------ loss and validation


def scale_updates(scale: float, where: Callable[[str], bool]) -> optax.GradientTransformation:
    """Multiplies the updates of the leaves `where(path)` by `scale`: after AdamW (whose update already includes the
    learning rate and the weight decay) that is the same as a learning rate `scale` times the schedule's."""

    def update(updates, state, params=None):
        del params
        flat = params_io.flatten(updates)
        return params_io.unflatten({k: v * scale if where(k) else v for k, v in flat.items()}), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def value_optimizer(config: _value_config.ValueTrainConfig) -> optax.GradientTransformation:
    """The shared AdamW + schedule; with `siglip_lr_scale` != 1 SigLIP's updates are scaled after it. At 1 the
    optimizer (and so its checkpointed state) is exactly the policy's, so existing runs resume unchanged."""
    tx = _optimizer.create_optimizer(config.optimizer, config.lr_schedule)
    if config.siglip_lr_scale == 1.0:
        return tx
    return optax.chain(tx, scale_updates(config.siglip_lr_scale, is_siglip))


def loss_fn(config: _value_config.ValueTrainConfig) -> Callable[..., jax.Array]:
    """(logits, targets, reduce) -> cross-entropy against the config's categorical target of the labels."""
    model = config.model

    def loss(logits, targets, reduce=True):
        return _value_model.value_loss(
            logits, targets, v_min=model.v_min, v_max=model.v_max, reduce=reduce,
            kind=config.value_target, sigma_bins=config.hl_gauss_sigma,
        )  # fmt: skip

    return loss


def value_trainer(config: _value_config.ValueTrainConfig) -> _trainer.Trainer:
    """The shared `Trainer` with the value loss: per-bin cross-entropy against the frame's value target."""
    model = config.model
    module = model.module()
    value_loss = loss_fn(config)

    def loss(params, rng, batch):
        obs = value_checkpoint.preprocess(model, rng, batch, train=config.data.augment)
        targets = batch[value_data.VALUE_KEY]
        logits = module.apply({"params": params}, obs)
        pred = _value_model.expected_value(logits, model.v_min, model.v_max)
        return value_loss(logits, targets), {"mae": jnp.mean(jnp.abs(pred - targets))}

    return _trainer.Trainer(
        init_params=model.init_params,
        loss=loss,
        is_frozen=freeze_filter(model.freeze_mode),
        tx=value_optimizer(config),
        ema_decay=config.ema_decay,
        # Frozen backbones are stored and used in the compute dtype (bf16 halves memory and checkpoint size).
        frozen_dtype=jnp.dtype(model.dtype),
    )


def eval_step(
    model: _value_model.ValueModelConfig,
    params: dict,
    batch: dict[str, Any],
    loss: Callable[..., jax.Array] | None = None,
) -> dict[str, jax.Array]:
    """Per-frame predicted value and cross-entropy (no augmentation); `loss` from `loss_fn` (default two-hot)."""
    logits = model.module().apply({"params": params}, value_checkpoint.preprocess(model, None, batch, train=False))
    targets = batch[value_data.VALUE_KEY]
    if loss is None:
        ce = _value_model.value_loss(logits, targets, v_min=model.v_min, v_max=model.v_max, reduce=False)
    else:
        ce = loss(logits, targets, reduce=False)
    return {
        "pred": _value_model.expected_value(logits, model.v_min, model.v_max),
        "ce": ce,
        "target": jnp.asarray(targets, jnp.float32),
    }


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


def weight_loader(config: _value_config.ValueTrainConfig) -> value_weights.ValueWeightLoader:
    """The backbones `pretrained_backbones` names, from the configured paths (else the environment, else openpi's
    cache locations of the releases); the others keep their fresh initialisation."""
    if not config.load_pretrained:
        return value_weights.ValueWeightLoader()
    paths = value_weights.ValueWeightLoader.from_env(config.siglip_path, config.gemma3_path)
    return value_weights.ValueWeightLoader(
        siglip_path=paths.siglip_path if "siglip" in config.pretrained_backbones else None,
        gemma3_path=paths.gemma3_path if "gemma3" in config.pretrained_backbones else None,
    )


def _same_stats(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(a[k].allclose(b[k], atol=0) for k in a)


def _check_tokenizer(config: _value_config.ValueTrainConfig) -> None:
    from openpi.models import tokenizer as _tokenizer

    try:
        _tokenizer.Gemma3Tokenizer(config.tokenizer_path, max_len=config.model.max_token_len)
    except errors.CheckpointError as e:
        raise errors.CheckpointError(f"{e} (flag: --tokenizer_path)") from e


class ValueTask(_trainer.Task):
    """A value-model run for `trainer.run`: the dataset is opened once, for the checks and both loaders."""

    val_interval: int
    progress_metrics = ("val_spearman",)
    frozen_saved_once = True
    divergence_hint = "lower --peak_lr, check the value_label column"

    def __init__(self, config: _value_config.ValueTrainConfig, dataset: Any = None):
        """`dataset`: the run's dataset when the caller has opened it already (`train` does, to count epochs)."""
        self.config = config
        self.trainer = value_trainer(config)
        self.val_interval = config.val_interval
        self.weights = weight_loader(config)
        self.dataset = dataset
        self._eval_fn = None
        self._sharding = None
        # Early stopping: (validation CE, step, params/ item, train_state/ item) of the best validation, on the host.
        self.best: tuple[float, int, Any, Any] | None = None

    def preflight(self, mesh: jax.sharding.Mesh) -> None:
        config = self.config
        _sharding.check_batch_divisible(config.batch_size, mesh)
        if config.early_stopping and jax.process_count() > 1:
            raise errors.ConfigError(
                f"early_stopping keeps the best state in one process's memory, but this run has "
                f"{jax.process_count()} processes; train without it or on one host."
            )
        if config.data.repo_id is None:
            raise errors.ConfigError("No dataset configured; pass --data_dir=<LeRobot dataset root>.")
        if self.dataset is None:
            self.dataset = _data_loader.open_dataset(config.data.repo_id)
        value_data.check_dataset(self.dataset, config.data)
        _check_tokenizer(config)
        self.norm_stats = self._norm_stats()
        source = None if config.resume else _norm_stats.stats_file(config.data.norm_stats_dirs(config.assets_dirs))
        _norm_stats.check_fits_dataset(self.norm_stats, self.dataset, {"state": config.data.state_key}, source=source)
        if not (config.resume and config.checkpoint_dir.is_dir()):
            self.weights.validate()
        train_eps, val_eps = value_data.split_episodes(
            self.dataset.num_episodes, config.data.val_fraction, config.data.split_seed
        )
        self.train_frames = value_data.episode_frames(self.dataset, train_eps)
        val = value_data.episode_frames(self.dataset, val_eps)
        self.val_frames = value_data.validation_frames(val, config.val_max_frames)
        logger.info(
            "Dataset %s: %d train episodes (%d frames), %d validation episodes (%d frames evaluated)",
            self.dataset.root, len(train_eps), len(self.train_frames), len(val_eps), len(self.val_frames),
        )  # fmt: skip
        self.factory = value_data.ValueItemFactory(
            config.data, config.model, self.norm_stats, config.tokenizer_path, dataset=self.dataset
        )

    def _norm_stats(self) -> dict[str, Any]:
        """The state stats the run normalises with. A resumed run keeps the ones saved with its latest step, so it
        normalises exactly as it started; if ./assets now holds different stats (recomputed since), that is only
        warned about: they are for new runs, and refusing would strand a run whose assets were refreshed."""
        config = self.config
        dirs = config.data.norm_stats_dirs(config.assets_dirs)
        assets_stats = config.data.load_norm_stats(config.assets_dirs)
        step_dir = _checkpoints.latest_step_dir(config.checkpoint_dir) if config.resume else None
        if step_dir is not None:
            saved = _checkpoints.restore_norm_stats(step_dir, value_checkpoint.ASSET_ID)
            if assets_stats is not None and not _same_stats(saved, assets_stats):
                logger.warning(
                    "--resume: the norm stats in %s differ from those the run started with (%s); the run keeps "
                    "normalising with the checkpoint's.",
                    [str(d) for d in dirs],
                    step_dir / _checkpoints.ASSETS / value_checkpoint.ASSET_ID,
                )
            return saved
        if assets_stats is None:
            raise _config.missing_norm_stats_error(
                f"state norm stats for value config {config.name!r}",
                dirs,
                f"{config.name} --repo-id={config.data.repo_id}",
            )
        return assets_stats

    def start(self, mngr, resuming: bool) -> None:
        """Fresh run: writes value_model.json. Resume: refuses a changed model, data inputs or tokenizer."""
        run_dir = self.config.checkpoint_dir
        current = value_checkpoint.checkpoint_json(self.config)
        if not resuming:
            if jax.process_index() == 0:
                atomic.write_text(run_dir / value_checkpoint.CONFIG_FILE, current)
            return
        latest = run_dir / str(mngr.latest_step())
        saved_path = latest / value_checkpoint.CONFIG_FILE
        if not saved_path.is_file():
            saved_path = run_dir / value_checkpoint.CONFIG_FILE
        saved = value_checkpoint.read_checkpoint_json(saved_path)
        current = json.loads(current)
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

    def load_weights(self, params_shape: Any) -> dict[str, Any] | None:
        return _trainer.load_weights(self.weights, params_shape)

    def load_frozen(self) -> dict[str, Any]:
        return value_checkpoint.load_frozen(self.config.checkpoint_dir)

    def after_init(self, state: _utils.TrainState) -> None:
        _, frozen = _utils.split_params(state.params, self.trainer.is_frozen)
        sources = {"siglip": self.weights.siglip_path, "gemma3": self.weights.gemma3_path}
        value_checkpoint.save_frozen(self.config.checkpoint_dir, frozen, sources)
        _checkpoints._sync("value_frozen")

    def create_loader(self, *, sharding, start_step: int, num_batches: int) -> _data_loader.DataLoader:
        self._sharding = sharding
        return value_data.create_loader(
            self.factory, self.train_frames, batch_size=self.config.batch_size, seed=self.config.seed, shuffle=True,
            num_workers=self.config.num_workers, sharding=sharding, start_step=start_step, num_batches=num_batches,
        )  # fmt: skip

    def norm_stats_assets(self) -> dict[str, Any]:
        return {value_checkpoint.ASSET_ID: self.norm_stats}

    def evaluate(self, state: _utils.TrainState) -> dict[str, float]:
        """CE, MAE and Spearman over the fixed validation frames (the last batch's padding is dropped)."""
        if not len(self.val_frames):
            return {}
        if self._eval_fn is None:
            model, loss = self.config.model, loss_fn(self.config)
            self._eval_fn = jax.jit(lambda p, b: eval_step(model, p, b, loss), out_shardings=_sharding.replicated(
                self._sharding.mesh))  # fmt: skip
        n_batches = -(-len(self.val_frames) // self.config.batch_size)
        loader = value_data.create_loader(
            self.factory, self.val_frames, batch_size=self.config.batch_size, seed=0, shuffle=False,
            num_workers=self.config.num_workers, sharding=self._sharding, num_batches=n_batches,
        )  # fmt: skip
        params = self.trainer.inference_params(state)
        outs = [jax.device_get(self._eval_fn(params, batch)) for batch in loader]
        merged = {k: np.concatenate([o[k] for o in outs])[: len(self.val_frames)] for k in outs[0]}
        metrics = validation_metrics(merged)
        if self.config.early_stopping and (self.best is None or metrics["val_ce"] < self.best[0]):
            # Only the saved items (trainable weights, their EMA, the optimizer), not the frozen backbones.
            items = jax.device_get(self.trainer.checkpoint_items(state, with_frozen=False))
            self.best = (metrics["val_ce"], int(jax.device_get(state.step)), *items)
        return metrics

    def after_save(self, mngr, step: int) -> None:
        mngr.wait_until_finished()
        self._write_step_json(step)
        if self.config.early_stopping and step == self.config.num_train_steps - 1:
            self._keep_best(mngr, last_step=step)

    def _write_step_json(self, step: int) -> None:
        if jax.process_index() == 0:
            atomic.write_text(
                self.config.checkpoint_dir / str(step) / value_checkpoint.CONFIG_FILE,
                value_checkpoint.checkpoint_json(self.config),
            )

    def _keep_best(self, mngr, *, last_step: int) -> None:
        """Makes the best validation's state the run's final checkpoint (steps saved after it are deleted) and
        writes `early_stopping.json`. A step folder is named one below its state's step count, as `trainer.run`
        names them, so a resumed run continues from the chosen state."""
        if self.best is None:
            raise errors.ConfigError("early_stopping found no validation to choose from; lower val_interval.")
        val_ce, best_step, params, train_state = self.best
        folder = best_step - 1
        if folder != last_step:
            for step in sorted(s for s in mngr.all_steps() if s > folder):
                mngr.delete(step)
            _checkpoints.save(mngr, folder, params=params, train_state=train_state, norm_stats=self.norm_stats_assets())
            mngr.wait_until_finished()
            self._write_step_json(folder)
        record = {"best_step": best_step, "best_val_ce": val_ce, "last_step": last_step + 1, "checkpoint": folder}
        if jax.process_index() == 0:
            atomic.write_text(self.config.checkpoint_dir / EARLY_STOPPING_FILE, json.dumps(record, indent=2) + "\n")
        logger.info("Early stopping: kept step %d (val_ce %.4f) of %d", best_step, val_ce, last_step + 1)


def resolve_epochs(config: _value_config.ValueTrainConfig) -> tuple[_value_config.ValueTrainConfig, Any]:
    """(config with its steps resolved, the opened dataset or None): with `num_train_epochs` the dataset is opened
    here, before the trainer exists, because the step count and the schedule follow its training episodes."""
    if config.num_train_epochs is None:
        return config, None
    dataset = _data_loader.open_dataset(config.data.repo_id)
    frames = len(value_data.train_frames(dataset, config.data))
    resolved = config.for_training_frames(frames)
    logger.info(
        "%g epochs of %d training frames at batch %d: %d steps, validation every %d",
        config.num_train_epochs, frames, config.batch_size, resolved.num_train_steps, resolved.val_interval,
    )  # fmt: skip
    return resolved, dataset


def train(config: _value_config.ValueTrainConfig, *, progress: bool = True) -> _trainer.RunResult:
    """Runs (or resumes) value-model training; returns the final state and the validation history. With
    `early_stopping` the returned state is the last one; the checkpoint holds the best (`early_stopping.json`)."""
    config, dataset = resolve_epochs(config)
    return _trainer.run(ValueTask(config, dataset), progress=progress)


def trained_steps(run_dir) -> dict[str, int]:
    """Of a finished run: `steps_trained` (the optimizer steps the run took) and `checkpoint_step` (those behind the
    weights its latest checkpoint holds: fewer when early stopping kept an earlier validation's state)."""
    if (pathlib.Path(run_dir) / EARLY_STOPPING_FILE).is_file():
        record = read_early_stopping(run_dir)
        return {"steps_trained": record["last_step"], "checkpoint_step": record["best_step"]}
    steps = _checkpoints.finished_steps(run_dir)
    if not steps:
        raise errors.CheckpointError(f"{run_dir} holds no finished training step.")
    return {"steps_trained": steps[-1] + 1, "checkpoint_step": steps[-1] + 1}


def read_early_stopping(run_dir) -> dict[str, Any]:
    """`early_stopping.json` of a finished run: best_step (steps trained by the kept state), best_val_ce,
    last_step, checkpoint (its step folder)."""
    path = pathlib.Path(run_dir) / EARLY_STOPPING_FILE
    if not path.is_file():
        raise errors.CheckpointError(f"{path} is missing; the run was not trained with early_stopping or not finished.")
    return json.loads(path.read_text())


def main(args: list[str]) -> _trainer.RunResult:
    """`scripts/train_value.py`'s body: distributed flags, `<config> [--flags]`, join the processes, train."""
    args, dist = distributed.pop_distributed_flags(args)
    config = _value_config.cli(args)  # before joining other processes: --help and bad flags need no coordinator
    distributed.maybe_initialize_distributed(dist)
    result = train(config)
    if result.val_history:
        logger.info("Final validation: %s", result.val_history[-1])
    logger.info("Value checkpoint: %s", config.checkpoint_dir)
    return result
