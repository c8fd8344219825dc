"""Trainer checkpoints in openpi's layout, with Orbax.

    <checkpoint_base_dir>/<config name>/<exp name>/
        wandb_id.txt
        <step>/params/                        {"params": weights}: EMA weights when EMA is on (what serving loads)
        <step>/train_state/                   step, optimizer state, raw params when they differ from params/
        <step>/assets/<asset_id>/norm_stats.json

Orbax writes each step into a temporary directory and renames it when complete, so a killed job never leaves
a half-written step behind. Generic over what the state holds: the value-model trainer uses it too.
"""

from collections.abc import Mapping
import dataclasses
import logging
import pathlib
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from openpi.shared import errors
from openpi.shared import normalize as _normalize
from openpi.training import distributed as _distributed

logger = logging.getLogger(__name__)

PARAMS = "params"
TRAIN_STATE = "train_state"
ASSETS = _normalize.CHECKPOINT_ASSETS
WANDB_ID_FILE = "wandb_id.txt"


class AssetsHandler(ocp.CheckpointHandler):
    """Writes `<step>/assets/<asset_id>/norm_stats.json` (process 0 only) and reads it back."""

    def save(self, directory, args: "AssetsSave"):
        if jax.process_index() != 0:
            return
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for asset_id, stats in args.norm_stats.items():
            _normalize.save(directory / asset_id, stats)

    def restore(self, directory, args: "AssetsRestore | None" = None) -> dict[str, dict[str, _normalize.NormStats]]:
        del args
        return _normalize.load_assets(directory)

    def metadata(self, directory):
        return None

    def finalize(self, directory):
        return None

    def close(self):
        return None


@ocp.args.register_with_handler(AssetsHandler, for_save=True)
@dataclasses.dataclass
class AssetsSave(ocp.args.CheckpointArgs):
    norm_stats: Mapping[str, Mapping[str, _normalize.NormStats]]


@ocp.args.register_with_handler(AssetsHandler, for_restore=True)
@dataclasses.dataclass
class AssetsRestore(ocp.args.CheckpointArgs):
    pass


def initialize_checkpoint_dir(
    checkpoint_dir: str | pathlib.Path,
    *,
    keep_period: int | None,
    overwrite: bool,
    resume: bool,
    max_to_keep: int = 1,
    async_save: bool = True,
) -> tuple[ocp.CheckpointManager, bool]:
    """Opens the run directory; returns (manager, resuming).

    An existing directory needs --resume (continue from its latest step) or --overwrite (delete it first);
    with neither the run refuses, so a typo in --exp-name cannot destroy another run.
    """
    checkpoint_dir = pathlib.Path(checkpoint_dir).resolve()
    if overwrite and resume:
        raise errors.ConfigError(
            "--overwrite and --resume contradict each other; pass only one (add --no-overwrite to resume a config that overwrites by default)."
        )
    resuming = False
    # Every process must take the same branch: all look before process 0 changes anything.
    _sync("look")
    exists = checkpoint_dir.exists()
    _sync("looked")
    if exists:
        if overwrite:
            if jax.process_index() == 0:
                shutil.rmtree(checkpoint_dir)
                logger.info("Deleted existing checkpoint directory %s (--overwrite)", checkpoint_dir)
        elif resume:
            resuming = True
        else:
            raise errors.CheckpointError(
                f"Checkpoint directory {checkpoint_dir} already exists; pass --resume to continue that run or "
                "--overwrite to delete it, or choose another --exp-name."
            )
    if jax.process_index() == 0:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    _sync("ready")
    mngr = ocp.CheckpointManager(
        checkpoint_dir,
        item_handlers={
            PARAMS: ocp.PyTreeCheckpointHandler(),
            TRAIN_STATE: ocp.PyTreeCheckpointHandler(),
            ASSETS: AssetsHandler(),
        },
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            keep_period=keep_period,
            create=False,
            enable_async_checkpointing=async_save,
        ),
    )
    if resuming and mngr.latest_step() is None:
        logger.warning("--resume given but %s holds no complete checkpoint; starting from scratch.", checkpoint_dir)
        resuming = False
    return mngr, resuming


def _sync(name: str) -> None:
    _distributed.barrier(f"openpi_checkpoints_{name}")


def save(
    mngr: ocp.CheckpointManager,
    step: int,
    *,
    params: Any,
    train_state: Any,
    norm_stats: Mapping[str, Mapping[str, _normalize.NormStats]] | None = None,
) -> None:
    """Saves one step: `params` (wrapped as {"params": ...}, openpi's layout), `train_state`, and assets."""
    args = {
        PARAMS: ocp.args.PyTreeSave({"params": params}),
        TRAIN_STATE: ocp.args.PyTreeSave(train_state),
        ASSETS: AssetsSave(dict(norm_stats or {})),
    }
    mngr.save(step, args=ocp.args.Composite(**args))


def _restore_args(template: Any) -> ocp.args.PyTreeRestore:
    return ocp.args.PyTreeRestore(item=template, restore_args=ocp.checkpoint_utils.construct_restore_args(template))


def restore(
    mngr: ocp.CheckpointManager,
    *,
    train_state_template: Any,
    params_template: Any,
    step: int | None = None,
) -> tuple[Any, Any, int]:
    """Restores (train_state, params, step) onto the templates' shardings (arrays or ShapeDtypeStructs)."""
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise errors.CheckpointError(f"No checkpoint to restore in {mngr.directory}.")
    restored = mngr.restore(
        step,
        args=ocp.args.Composite(
            **{
                PARAMS: _restore_args({"params": params_template}),
                TRAIN_STATE: _restore_args(train_state_template),
            }
        ),
    )
    return restored[TRAIN_STATE], restored[PARAMS]["params"], step


# Norm stats saved with a step: `<step_dir>/assets/<asset_id>/norm_stats.json` (the only one if no id). Defined in
# `shared.normalize`, so that `policies.policy_config` (a layer below training) reads them with the same code.
restore_norm_stats = _normalize.load_step_norm_stats


def latest_step_dir(checkpoint_dir: str | pathlib.Path) -> pathlib.Path | None:
    """The newest finished step of a run (Orbax renames a step to its number only once it is complete), or None.

    For checks that must run before the checkpoint manager is opened (e.g. which norm stats a resume uses).
    """
    steps = finished_steps(checkpoint_dir)
    return pathlib.Path(checkpoint_dir) / str(steps[-1]) if steps else None


def finished_steps(checkpoint_dir: str | pathlib.Path) -> list[int]:
    """The run's finished steps, ascending: folders named by their step (Orbax renames a step to its number only
    once it is complete) that hold params/."""
    checkpoint_dir = pathlib.Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    return sorted(int(p.name) for p in checkpoint_dir.iterdir() if p.name.isdigit() and (p / PARAMS).is_dir())


def read_wandb_id(checkpoint_dir: str | pathlib.Path) -> str | None:
    path = pathlib.Path(checkpoint_dir) / WANDB_ID_FILE
    return path.read_text().strip() if path.is_file() else None


def write_wandb_id(checkpoint_dir: str | pathlib.Path, run_id: str) -> None:
    """Stored beside the steps so that --resume continues the same wandb run."""
    path = pathlib.Path(checkpoint_dir) / WANDB_ID_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(run_id)
    tmp.replace(path)
