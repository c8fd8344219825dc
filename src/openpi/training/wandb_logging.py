"""Metrics logging to Weights & Biases, optional and offline-friendly.

Shared by every trainer. wandb is an optional dependency (`uv sync --extra wandb`); without it, or with
`wandb_enabled=False` / `wandb_mode="disabled"`, logging is a no-op and metrics go to the console only.
Online and offline modes both work; the run id is stored beside the checkpoints so `--resume` continues it.
"""

import dataclasses
import logging

import jax

from openpi.training import checkpoints as _checkpoints

logger = logging.getLogger("openpi.wandb")


class WandbLogger:
    """wandb when enabled and installed (process 0 only); otherwise a no-op with a one-time warning."""

    def __init__(self, config, resuming: bool):
        self.run = None
        mode = "disabled" if not config.wandb_enabled else config.wandb_mode
        if mode == "disabled" or jax.process_index() != 0:
            return
        try:
            import wandb
        except ImportError:
            logger.warning("wandb is not installed; logging to the console only (pip install wandb to enable it).")
            return
        run_id = _checkpoints.read_wandb_id(config.checkpoint_dir) if resuming else None
        self.run = wandb.init(
            project=config.project_name,
            name=config.exp_name,
            id=run_id,
            resume="allow" if run_id else None,
            mode=mode,
            config=dataclasses.asdict(config) if not resuming else None,
        )
        _checkpoints.write_wandb_id(config.checkpoint_dir, self.run.id)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
