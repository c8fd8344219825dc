"""Loading a served policy from a checkpoint: wrong paths and mismatched weights fail early and clearly."""

import dataclasses

import jax
import numpy as np
import pytest

from openpi.models import params_io
from openpi.policies import policy_config
from openpi.shared import errors
from openpi.shared import normalize
from openpi.training import config as _config


@pytest.fixture(scope="module")
def train_config(tiny_spm_model):
    config = _config.get_config("debug_pi06")
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, assets=_config.AssetsConfig(asset_id="yam_x")),
        tokenizer_path=str(tiny_spm_model),
    )


def _stats():
    rng = np.random.default_rng(0)
    return {k: normalize.compute(rng.normal(size=(64, 14)).astype(np.float32)) for k in ("state", "actions")}


def test_missing_checkpoint_dir(train_config, tmp_path):
    with pytest.raises(errors.CheckpointError, match="not found"):
        policy_config.create_trained_policy(train_config, tmp_path / "nope")


def test_step_dir_without_params(train_config, tmp_path):
    (tmp_path / "assets").mkdir()
    with pytest.raises(errors.CheckpointError, match="no params/ folder"):
        policy_config.create_trained_policy(train_config, tmp_path)


def test_missing_norm_stats_fail_before_loading_weights(train_config, tmp_path):
    (tmp_path / "params").mkdir()  # empty: restoring it would fail differently
    with pytest.raises(errors.CheckpointError, match="no norm stats for asset 'yam_x'"):
        policy_config.create_trained_policy(train_config, tmp_path)


def test_weights_of_another_model_are_refused(train_config, tmp_path):
    params_io.save_params(tmp_path / "params", {"action_in_proj": {"kernel": np.zeros((3, 3), np.float32)}})
    normalize.save(tmp_path / "assets" / "yam_x", _stats())
    with pytest.raises(errors.CheckpointError, match="does not match the model"):
        policy_config.create_trained_policy(train_config, tmp_path)


def test_random_params_have_the_model_tree(train_config):
    params = policy_config.random_params(train_config.model, seed=0)
    params_io.check_tree_matches(train_config.model.params_shape(), params)
    leaves = jax.tree.leaves(params)
    assert all(np.isfinite(np.asarray(x)).all() for x in leaves)
    assert float(np.std(np.asarray(leaves[0]))) > 0


@pytest.mark.parametrize("missing", ["actions", "state"])
def test_norm_stats_without_a_policy_key_are_refused(train_config, tmp_path, missing):
    """Issue 29.3: a checkpoint whose norm_stats.json lacks 'actions' served actions in model units."""
    params_io.save_params(tmp_path / "params", {"action_in_proj": {"kernel": np.zeros((3, 3), np.float32)}})
    path = normalize.save(tmp_path / "assets" / "yam_x", {k: v for k, v in _stats().items() if k != missing})
    with pytest.raises(normalize.NormStatsError, match=rf"{path} has no {missing!r} entry .*compute_norm_stats.py"):
        policy_config.create_trained_policy(train_config, tmp_path)
    with pytest.raises(normalize.NormStatsError, match=rf"has no {missing!r} entry"):
        policy_config.create_dummy_policy(train_config, norm_stats={k: v for k, v in _stats().items() if k != missing})
