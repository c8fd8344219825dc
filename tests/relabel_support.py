"""Shared pieces of the relabelling tests: a synthetic dataset and a tiny value checkpoint trained on it."""

import dataclasses
import pathlib

from openpi.datasets import synthetic
from openpi.models import value_model
from openpi.training import norm_stats
from openpi.training import optimizer as _optimizer
from openpi.training import value_config
from openpi.training import value_train

TINY = value_model.tiny_config()
CAMERAS = (("cam_high", synthetic.HEAD_CAMERA), ("cam_left_wrist", synthetic.LEFT_WRIST_CAMERA))
DATA = synthetic.SyntheticConfig(num_episodes=12, image_size=32, max_length=24)


def write_dataset(root: pathlib.Path, version: str = "v3.0") -> pathlib.Path:
    synthetic.write_dataset(root, DATA, version=version)
    return root


def train_value(
    data_root: pathlib.Path, tokenizer: pathlib.Path, run_dir: pathlib.Path, steps: int = 40
) -> pathlib.Path:
    """Trains the tiny value model for `steps` steps on `data_root`; returns the run directory."""
    base = value_config.get_config("value_debug")
    data = dataclasses.replace(base.data, repo_id=str(data_root), val_fraction=0.0, cameras=CAMERAS, augment=False)
    config = dataclasses.replace(
        base,
        model=TINY,
        data=data,
        tokenizer_path=str(tokenizer),
        checkpoint_dir_override=str(run_dir),
        assets_base_dir=str(run_dir) + "_assets",
        batch_size=16,
        num_workers=0,
        num_train_steps=steps,
        save_interval=steps,
        val_interval=10**6,
        log_interval=10**6,
        keep_period=None,
        overwrite=True,
        lr_schedule=_optimizer.CosineDecaySchedule(warmup_steps=2, peak_lr=3e-3, decay_steps=steps, decay_lr=1e-4),
    )
    norm_stats.write_for_config(config)  # as scripts/compute_norm_stats.py <value config>
    value_train.train(config, progress=False)
    return run_dir
