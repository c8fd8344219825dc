"""The value model's checkpoint format and inference loading: what a labeller needs, without the trainer.

Checkpoint layout (`<run dir>` = --checkpoint_dir of scripts/train_value.py):

    value_model.json           model config (cameras, prompt format, bins, ...) + data inputs; also in every step
    frozen_params/             the frozen backbones, written ONCE per run (openpi params layout, bf16 when the
    frozen_params.json           model computes in bf16) with a sha256 over the arrays, checked on every load
    <step>/params/             {"params": trainable weights}: their EMA when EMA is on (what labelling uses)
    <step>/train_state/        step, optimizer state, raw trainable weights (when EMA is on)
    <step>/assets/<id>/norm_stats.json   state normalisation used by the data pipeline
    <step>/value_model.json

So a step of the full-size model with frozen backbones holds ~1.3M trainable weights (~20 MB with Adam and EMA)
instead of re-saving 680M frozen weights every time, and resuming restores Adam's moments.

Kept apart from `value_train` so the relabeller (and anything else that only reads a value run) does not depend
on the training loop: `load_value_checkpoint(dir) -> (ValueModelConfig, params)`, `load_value_inputs(dir)` (the
data side: cameras, state key, prompt, norm stats) and `predict_values(model_config, params, batch) -> [B]`.
"""

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
from typing import Any

import jax
import numpy as np

from openpi.models import model as _model
from openpi.models import params_io
from openpi.models import value_model as _value_model
from openpi.shared import atomic
from openpi.shared import errors
from openpi.shared import normalize as _normalize
from openpi.training import checkpoints as _checkpoints
from openpi.training import value_config as _value_config
from openpi.training import value_data

CONFIG_FILE = "value_model.json"
FROZEN_DIR = "frozen_params"
FROZEN_META = "frozen_params.json"
ASSET_ID = "value_data"
# Files Orbax writes beside a step's items to record when and whether a save finished: not content.
_ORBAX_BOOKKEEPING = frozenset({"_CHECKPOINT_METADATA", "commit_success.txt"})


def preprocess(model: _value_model.ValueModelConfig, rng, batch: dict, *, train: bool) -> _model.Observation:
    """Batch dict -> preprocessed `Observation`, the same for training (augmented) and inference."""
    obs = _model.Observation.from_dict(batch)
    return _model.preprocess_observation(
        rng, obs, train=train, image_keys=model.cameras, image_resolution=model.image_resolution
    )


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


def read_checkpoint_json(path: pathlib.Path) -> dict:
    """A JSON file of a value checkpoint; a damaged one is a `CheckpointError` (rerunning will not help)."""
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
    return read_checkpoint_json(path)


def locate(checkpoint: str | os.PathLike, step: int | None) -> tuple[pathlib.Path, pathlib.Path]:
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
    steps = _checkpoints.finished_steps(path)
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
    run_dir, step_dir = locate(checkpoint, step)
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


def _restore_tree(path: pathlib.Path, *, only: str | None = None) -> Any:
    """The whole Orbax PyTree item at `path` as host numpy leaves (or only its top-level key `only`; None if absent).

    The whole item is restored even for `only`: Orbax refuses a restore tree that is a strict subset of the saved one.
    """
    import orbax.checkpoint as ocp

    with ocp.PyTreeCheckpointer() as ckptr:
        tree = params_io._tree_metadata(ckptr.metadata(path))
        if only is not None and only not in tree:
            return None
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        out = ckptr.restore(path, args=ocp.args.PyTreeRestore(item=tree, restore_args=restore_args))
    return out if only is None else out[only]


def _restore_raw_trainable(step_dir: pathlib.Path) -> dict | None:
    """The raw (non-EMA) trainable weights from train_state/, or None when the run had no EMA."""
    raw = _restore_tree(step_dir / _checkpoints.TRAIN_STATE, only="trainable_params")
    return None if raw is None else params_io.flatten(raw)


def step_sha256(step_dir: pathlib.Path) -> str:
    """sha256 of the weights a step serves, by content: every array of params/ (path, dtype, shape, bytes, in sorted
    order) and the step's other files (value_model.json, norm stats) byte for byte.

    Orbax's own files (`_CHECKPOINT_METADATA`, `commit_success.txt`, OCDBT data) carry save timestamps and storage
    layout, so hashing them gave two runs with identical weights different digests (issue 31); the arrays Orbax
    restores do not depend on when or how they were written. train_state/ is left out: at full size its optimizer
    moments are twice the weights, and every relabelling process would restore them only to hash them.
    """
    digest = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(_restore_tree(step_dir / _checkpoints.PARAMS))[0]
    digest.update(tree_checksum({jax.tree_util.keystr(path): leaf for path, leaf in leaves}).encode())
    skipped = (_checkpoints.PARAMS, _checkpoints.TRAIN_STATE)
    for path in sorted(p for p in step_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(step_dir)
        if rel.parts[0] in skipped or rel.name in _ORBAX_BOOKKEEPING or any(x.startswith(".") for x in rel.parts):
            continue
        digest.update(f"{rel.as_posix()}|".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(run_dir: pathlib.Path, step_dir: pathlib.Path) -> dict[str, Any]:
    """Which value weights labelled a dataset (`meta/recap.json` `relabel.value_checkpoint`): the run, the step,
    the step's content digest (`step_sha256`) and the run's frozen-backbone checksum (already over arrays)."""
    frozen = run_dir / FROZEN_META
    frozen_sha = read_checkpoint_json(frozen).get("sha256") if frozen.is_file() else None
    return {
        "run": str(run_dir),
        "step": step_dir.name,
        "step_sha256": step_sha256(step_dir),
        "frozen_sha256": frozen_sha,
    }


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
    _, step_dir = locate(checkpoint, step)
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
        logits = module.apply({"params": params}, preprocess(model, None, batch, train=False))
        return _value_model.expected_value(logits, model.v_min, model.v_max)

    return predict


def predict_values(model: _value_model.ValueModelConfig, params: dict, batch: dict[str, Any]) -> jax.Array:
    """Expected values [B] for a batch of value-data items (jitted once per model config and batch shape)."""
    return _predict_fn(model)(params, batch)
