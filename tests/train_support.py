"""Shared helpers for the training tests: a tiny synthetic YAM dataset with norm stats, and debug configs on it."""

import dataclasses
import pathlib

import numpy as np

from openpi.datasets import synthetic
from openpi.shared import normalize
from openpi.training import config as _config

REPO = pathlib.Path(__file__).resolve().parents[1]


def make_workspace(root: pathlib.Path, *, num_episodes: int = 4, image_size: int = 32) -> dict[str, str]:
    """Writes a small synthetic YAM RECAP dataset and its norm stats; returns config overrides."""
    root = pathlib.Path(root)
    data = root / "yam_synthetic"
    if not data.exists():
        cfg = synthetic.SyntheticConfig(num_episodes=num_episodes, image_size=image_size, max_length=16)
        synthetic.write_dataset(data, cfg)
    from openpi.datasets import lerobot

    ds = lerobot.LeRobotDataset.open(data)
    state = np.asarray(ds.column(synthetic.STATE), np.float32)
    actions = np.asarray(ds.column(synthetic.ACTION), np.float32)
    stats = {"state": normalize.compute(state), "actions": normalize.compute(actions - state * 0.0)}
    normalize.save(root / "assets" / "yam_synthetic", stats)
    return {"repo_id": str(data), "assets_base_dir": str(root / "assets"), "checkpoint_base_dir": str(root / "ckpt")}


def debug_config(workspace: dict[str, str], spm: pathlib.Path, name: str = "debug_pi06", **overrides):
    """A registered debug config pointed at the workspace and the tiny SentencePiece model."""
    cfg = _config.get_config(name)
    data = dataclasses.replace(cfg.data, repo_id=workspace["repo_id"])
    base = {
        "data": data,
        "assets_base_dir": workspace["assets_base_dir"],
        "checkpoint_base_dir": workspace["checkpoint_base_dir"],
        "tokenizer_path": str(spm),
        "num_workers": 0,
        "save_interval": 1000,
    }
    return dataclasses.replace(cfg, **{**base, **overrides})
