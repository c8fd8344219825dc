"""Value training runs: resuming refuses changed data inputs. The checkpoint-format tests are in value_checkpoint_test."""

import dataclasses
import pathlib

import pytest

from openpi.datasets import synthetic
from openpi.models import value_model
from openpi.shared import errors
from openpi.shared import normalize
from openpi.training import norm_stats
from openpi.training import optimizer as _optimizer
from openpi.training import value_config
from openpi.training import value_train

TINY = value_model.tiny_config(freeze_mode="all_backbones")
CAMERAS = (("cam_high", synthetic.HEAD_CAMERA), ("cam_left_wrist", synthetic.LEFT_WRIST_CAMERA))


def _config(root, tokenizer, run_dir, **kw) -> value_config.ValueTrainConfig:
    base = value_config.get_config("value_debug")
    data = dataclasses.replace(base.data, repo_id=str(root), val_fraction=0.0, cameras=CAMERAS, augment=False)
    defaults = {
        "model": TINY,
        "data": data,
        "tokenizer_path": str(tokenizer),
        "checkpoint_dir_override": str(run_dir),
        "assets_base_dir": str(pathlib.Path(run_dir).parent / "assets"),
        "batch_size": 2,
        "num_workers": 0,
        "num_train_steps": 2,
        "save_interval": 10,
        "val_interval": 10**6,
        "log_interval": 100,
        "keep_period": None,
        "overwrite": True,
        "lr_schedule": _optimizer.CosineDecaySchedule(warmup_steps=1, peak_lr=1e-3, decay_steps=20, decay_lr=1e-4),
    }
    defaults.update(kw)
    return dataclasses.replace(base, **defaults)


@pytest.fixture(scope="module")
def run(tmp_path_factory, gemma3_spm_model) -> tuple[pathlib.Path, pathlib.Path]:
    tmp = tmp_path_factory.mktemp("value_meta")
    root = tmp / "ds"
    synthetic.write_dataset(root, synthetic.SyntheticConfig(num_episodes=3, image_size=32, max_length=16))
    config = _config(root, gemma3_spm_model, tmp / "run")
    norm_stats.write_for_config(config)
    value_train.train(config, progress=False)
    return root, tmp / "run"


def test_resume_with_other_data_inputs_is_refused(run, gemma3_spm_model, tmp_path):
    """Issue 14.8: resuming with other camera columns would label with cameras the weights never saw."""
    import shutil

    root, run_dir = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    swapped = ((CAMERAS[0][0], CAMERAS[1][1]), (CAMERAS[1][0], CAMERAS[0][1]))
    base = _config(root, gemma3_spm_model, copy, resume=True, overwrite=False, num_train_steps=3)
    base = dataclasses.replace(base, assets_base_dir=str(run_dir.parent / "assets"))
    with pytest.raises(errors.ConfigError, match="data inputs"):
        value_train.train(dataclasses.replace(base, data=dataclasses.replace(base.data, cameras=swapped)))


def test_training_without_norm_stats_names_the_command(run, gemma3_spm_model, tmp_path):
    """Value norm stats come from the assets dir (like the policy's); training never computes them."""
    root, _ = run
    config = _config(root, gemma3_spm_model, tmp_path / "run")
    with pytest.raises(errors.ConfigError, match=r"compute_norm_stats\.py value_debug"):
        value_train.train(config, progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


def test_state_stats_narrower_than_the_state_are_refused_before_the_run(gemma3_spm_model, tmp_path):
    """Issue 20.4: a reused asset id with 7-dim state stats normalised only the leading dims of the 14-dim state."""
    root = tmp_path / "ds"
    synthetic.write_dataset(root, synthetic.SyntheticConfig(num_episodes=2, image_size=32, max_length=16))
    config = _config(root, gemma3_spm_model, tmp_path / "run")
    path = norm_stats.write_for_config(config)
    (stats,) = normalize.load(path).values()
    normalize.save(path.parent, {"state": normalize.NormStats(**{k: v[:7] for k, v in stats.to_dict().items()})})
    with pytest.raises(normalize.NormStatsError, match=rf"'state' in {path} have 7 dims but the data has 14"):
        value_train.train(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_state_only_stats_still_serve_a_value_run(gemma3_spm_model, tmp_path):
    """Issue 29.3: policies refuse norm stats without 'actions'; a value config's own state-only stats still load."""
    root = tmp_path / "ds"
    synthetic.write_dataset(root, synthetic.SyntheticConfig(num_episodes=2, image_size=32, max_length=16))
    config = _config(root, gemma3_spm_model, tmp_path / "run")
    path = norm_stats.write_for_config(config)
    assert set(normalize.load(path)) == {"state"}
    assert set(config.data.load_norm_stats(config.assets_dirs)) == {"state"}
