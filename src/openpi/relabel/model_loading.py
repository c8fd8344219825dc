"""Loading the value model for relabelling: checkpoint -> (item factory, values fn, cache key), cameras enforced."""

from typing import Any

from openpi.relabel import inference as _inference
from openpi.relabel import relabel_config as _config
from openpi.shared import errors

# 2: the key holds the source dataset's content fingerprint; 3: the checkpoint by content only (no paths, no mtimes);
# 4: step_sha256 over the restored arrays instead of Orbax's files (identical weights, identical key)
CACHE_VERSION = 4


def load_model(config: _config.RelabelConfig, ds: Any) -> tuple[Any, _inference.ValuesFn, dict[str, Any]]:
    """(item factory, values fn, cache key) from the value checkpoint; enforces the checkpoint's cameras.

    The values fn runs on this process's local devices (params placed once); the item factory is the training item
    pipeline itself (reader, transforms, tokenizer) without the value target, picklable for decoding workers.
    """
    from openpi.training import value_checkpoint

    ckpt = config.resolved_checkpoint_dir()
    if not ckpt.exists():
        raise errors.CheckpointError(
            f"Value checkpoint {ckpt} does not exist; pass the --checkpoint_dir written by scripts/train_value.py."
        )
    model, params = value_checkpoint.load_value_checkpoint(ckpt, use_ema=config.use_ema, step=config.step)
    run_dir, step_dir = value_checkpoint.locate(ckpt, config.step)
    inputs = value_checkpoint.load_value_inputs(ckpt, step=config.step)
    trained = [col for _, col in inputs.data.cameras]
    if config.cameras is not None and list(config.cameras) != trained:
        raise errors.ConfigError(
            f"--cameras {list(config.cameras)} differ from the cameras the value checkpoint {ckpt} was trained on "
            f"({trained}); label with the same cameras (drop --cameras) or retrain the value model."
        )
    missing = [c for c in trained if c not in ds.features]
    if missing:
        raise errors.DatasetError(
            f"Dataset {ds.root} lacks cameras {missing} that the value checkpoint {ckpt} was trained on "
            f"(it has {ds.camera_keys}); relabel a dataset recorded with those cameras."
        )
    if not ds.has_column(inputs.data.state_key):
        raise errors.DatasetError(f"Dataset {ds.root} has no state column {inputs.data.state_key!r}.")
    factory = inputs.item_factory(model, repo_id=str(ds.root), tokenizer_path=config.tokenizer_path)
    factory()  # fail early (tokenizer, cameras) before any worker starts

    values_fn = _inference.make_values_fn(model, params)
    # By content only: hosts that mount the shared checkpoint at different paths (or copied it, changing mtimes)
    # must compute the same digest, or process 0 finds no values for the others' episodes. A retrained or
    # replaced step changes step_sha256 (its arrays' contents and its plain files; not Orbax's timestamped metadata,
    # so two runs with identical weights share it).
    fingerprint = value_checkpoint.fingerprint(run_dir, step_dir)
    key = {
        "version": CACHE_VERSION,
        "value_checkpoint": {k: v for k, v in fingerprint.items() if k != "run"},
        "use_ema": config.use_ema,
        "step": config.step,
        "tokenizer": inputs.tokenizer,
        "batch_size": config.batch_size,
    }
    return factory, values_fn, key
