"""Reading and writing model parameters in openpi's params-checkpoint layout.

A params checkpoint (`gs://openpi-assets/checkpoints/<name>/params`, or `<step>/params` of a training run)
is an Orbax PyTree checkpoint whose single top-level item is "params": a pure nested dict of arrays that
matches the model's parameter tree 1:1. Checkpoints that openpi's trainer saved from an `nnx.State` carry an
extra "value" key under every leaf; it is stripped on restore so callers always get the pure dict. Writing
the same layout lets our checkpoints be served by openpi and openpi's be trained here.
"""

from collections.abc import Mapping
import logging
import os
import pathlib
import shutil
import uuid

import jax
import numpy as np
import orbax.checkpoint as ocp

from openpi.shared import download
from openpi.shared import errors

logger = logging.getLogger(__name__)


class _NoMissingItemMetadataWarning(logging.Filter):
    """Drops Orbax's "Metadata file does not exist: .../_CHECKPOINT_METADATA" warning, and only that one.

    Orbax's CheckpointManager (openpi's trainer and ours) writes `_CHECKPOINT_METADATA` once per step, not into the
    step's item folders; loading an item folder on its own (`<step>/params`, openpi's published `params/`) makes
    Orbax look for that file there and warn on every load, although nothing is wrong. We cannot write the file into
    a read-only or shared checkpoint, so the message is filtered where it is logged (absl's logger).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "Metadata file does not exist: %s" or not isinstance(record.args, tuple) or not record.args:
            return True
        return pathlib.PurePath(str(record.args[0])).name != "_CHECKPOINT_METADATA"


if not any(isinstance(f, _NoMissingItemMetadataWarning) for f in logging.getLogger("absl").filters):
    logging.getLogger("absl").addFilter(_NoMissingItemMetadataWarning())

PARAMS_ITEM = "params"
SEP = "/"
# Files one of which every Orbax PyTree checkpoint directory holds (current, OCDBT and pre-0.5 layouts).
_ORBAX_MARKERS = ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt", "checkpoint")


def flatten(tree: Mapping, *, sep: str = SEP) -> dict[str, object]:
    """`{"a": {"b": x}}` -> `{"a/b": x}`; an empty dict under a key counts as no leaf."""
    out: dict[str, object] = {}

    def walk(prefix: str, node: Mapping):
        for key, value in node.items():
            if not isinstance(key, str):
                raise errors.CheckpointError(f"Parameter keys must be strings, got {key!r} under {prefix or '<root>'}.")
            path = f"{prefix}{sep}{key}" if prefix else key
            if isinstance(value, Mapping):
                walk(path, value)
            else:
                out[path] = value

    walk("", tree)
    return out


def unflatten(flat: Mapping[str, object], *, sep: str = SEP) -> dict:
    """Inverse of `flatten`."""
    tree: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split(sep)
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _describe(x) -> str:
    return f"{tuple(x.shape)} {np.dtype(x.dtype).name}"


def check_tree_matches(
    expected: Mapping,
    actual: Mapping,
    *,
    check_shapes: bool = True,
    check_dtypes: bool = True,
    what: str = "checkpoint",
) -> None:
    """Raises `CheckpointError` naming the first differing path (in sorted order) between two param trees.

    Leaves may be arrays or `jax.ShapeDtypeStruct`s (e.g. from `jax.eval_shape`). A path missing from
    `actual`, one `actual` has in excess, a different shape or a different dtype each count as a difference;
    the message also says how many other paths differ, so one fix-and-retry round shows the whole picture.
    """
    flat_expected = flatten(expected)
    flat_actual = flatten(actual)
    problems: list[str] = []
    for path in sorted(flat_expected.keys() | flat_actual.keys()):
        if path not in flat_actual:
            problems.append(f"{path!r} is missing from the {what} (the model expects {_describe(flat_expected[path])})")
        elif path not in flat_expected:
            problems.append(f"{path!r} is in the {what} but not in the model")
        else:
            e, a = flat_expected[path], flat_actual[path]
            if check_shapes and tuple(e.shape) != tuple(a.shape):
                problems.append(
                    f"{path!r} has shape {tuple(a.shape)} in the {what}, the model expects {tuple(e.shape)}"
                )
            elif check_dtypes and np.dtype(e.dtype) != np.dtype(a.dtype):
                problems.append(
                    f"{path!r} has dtype {np.dtype(a.dtype).name} in the {what}, the model expects "
                    f"{np.dtype(e.dtype).name}"
                )
    if problems:
        more = f" ({len(problems) - 1} other paths differ too)" if len(problems) > 1 else ""
        raise errors.CheckpointError(
            f"The {what} does not match the model: {problems[0]}{more}; check that the config (variant, "
            "action_dim, pi05, LoRA) is the one the weights were trained with."
        )


def locate_checkpoint(path: str | os.PathLike) -> pathlib.Path:
    """The local directory of a params checkpoint; `CheckpointError` if it is missing or not an Orbax checkpoint."""
    try:
        local = download.maybe_download(path)
    except download.ArtefactNotFoundError as e:
        raise errors.CheckpointError(f"Params checkpoint not found: {e}") from e
    if not local.is_dir():
        raise errors.CheckpointError(
            f"{local} is a file, but a params checkpoint is an Orbax directory (e.g. .../<step>/params)."
        )
    if not any((local / marker).exists() for marker in _ORBAX_MARKERS):
        hint = ""
        if (local / PARAMS_ITEM).is_dir():
            hint = f" It contains a {PARAMS_ITEM}/ folder: pass {local / PARAMS_ITEM} instead."
        raise errors.CheckpointError(f"{local} is not an Orbax params checkpoint (no _METADATA file).{hint}")
    return local


def _tree_metadata(metadata) -> Mapping:
    """Orbax < 0.11 returns the metadata tree itself; newer versions wrap it in StepMetadata / TreeMetadata."""
    node = getattr(metadata, "item_metadata", metadata)
    node = getattr(node, "tree", node)
    return node


def restore_params(
    path: str | os.PathLike,
    *,
    dtype=None,
    restore_type: type = np.ndarray,
    sharding: jax.sharding.Sharding | None = None,
) -> dict:
    """Restores the pure nested params dict from an openpi params checkpoint.

    Args:
        path: the checkpoint directory (local, or a gs:// location already in the openpi cache).
        dtype: cast every leaf to this dtype; None keeps the stored dtypes.
        restore_type: `np.ndarray` (host memory, the weight loaders' choice) or `jax.Array`.
        sharding: for `jax.Array`, where to place the leaves; None replicates them over all devices.
    """
    local = locate_checkpoint(path)
    if restore_type is jax.Array and sharding is None:
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("x",))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    with ocp.PyTreeCheckpointer() as ckptr:
        try:
            tree = _tree_metadata(ckptr.metadata(local))
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise errors.CheckpointError(f"Cannot read the Orbax metadata of {local} ({e}); is it complete?") from e
        if not isinstance(tree, Mapping) or PARAMS_ITEM not in tree:
            keys = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
            raise errors.CheckpointError(
                f"{local} has no top-level '{PARAMS_ITEM}' item (found {keys}); pass the params/ folder of an "
                "openpi checkpoint, not a train_state/ or assets/ folder."
            )
        item = {PARAMS_ITEM: tree[PARAMS_ITEM]}
        restore_args = jax.tree.map(
            lambda _: ocp.ArrayRestoreArgs(restore_type=restore_type, dtype=dtype, sharding=sharding), item
        )
        restored = ckptr.restore(local, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args))
    flat = flatten(restored[PARAMS_ITEM])
    if flat and all(p.rsplit(SEP, 1)[-1] == "value" for p in flat):
        flat = {p.rsplit(SEP, 1)[0]: v for p, v in flat.items()}
    return unflatten(flat)


def _as_array_tree(node: Mapping) -> dict:
    return {k: _as_array_tree(v) if isinstance(v, Mapping) else _as_leaf(v) for k, v in node.items()}


def _as_leaf(x):
    return x if isinstance(x, jax.Array) else np.asarray(x)


def save_params(path: str | os.PathLike, params: Mapping, *, overwrite: bool = False) -> pathlib.Path:
    """Writes `params` as an openpi params checkpoint at `path` (a directory), never leaving it half-written.

    Orbax writes into a temporary directory and renames it when complete. With `overwrite`, an existing
    checkpoint is swapped out only after the new one is complete. Single-process helper: multi-host
    training writes through `openpi.training.checkpoints`.
    """
    path = pathlib.Path(path).expanduser().absolute()
    if not isinstance(params, Mapping) or not flatten(params):
        raise errors.CheckpointError(f"save_params needs a non-empty nested dict of arrays, got {type(params)}.")
    if path.exists() and not overwrite:
        raise errors.CheckpointError(f"{path} already exists; pass overwrite=True or choose another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with ocp.PyTreeCheckpointer() as ckptr:
            ckptr.save(staging, {PARAMS_ITEM: _as_array_tree(params)})
        if path.exists():
            retired = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, retired)
            os.replace(staging, path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("Saved params checkpoint to %s", path)
    return path
