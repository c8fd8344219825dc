"""Value training runs: resuming refuses changed data inputs. The checkpoint-format tests are in value_checkpoint_test."""

import dataclasses
import itertools
import pathlib

import jax
import numpy as np
import pytest

from openpi.datasets import lerobot
from openpi.datasets import synthetic
from openpi.models import params_io
from openpi.models import value_model
from openpi.shared import errors
from openpi.shared import normalize
from openpi.training import checkpoints
from openpi.training import norm_stats
from openpi.training import optimizer as _optimizer
from openpi.training import value_checkpoint
from openpi.training import value_config
from openpi.training import value_data
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


# ------------------------------------------------------------------------------ the levers of issue 27 (item 1)


def test_steps_follow_the_epochs():
    """num_train_epochs resolves the steps, the validation interval and the schedule from the training frames; without
    it the config is returned unchanged (the YAM configs train exactly as before)."""
    base = value_config.get_config("value_sim")
    assert base.for_training_frames(1234) is base
    config = dataclasses.replace(base, batch_size=8, num_train_epochs=2.0, val_every_epochs=0.5, save_interval=800)
    resolved = config.for_training_frames(100)
    assert resolved.num_train_steps == 25 and resolved.val_interval == 6 and resolved.save_interval == 25
    assert resolved.lr_schedule.decay_steps == 25 and resolved.lr_schedule.warmup_steps == 2
    assert resolved.lr_schedule.peak_lr == base.lr_schedule.peak_lr
    assert config.for_training_frames(400).num_train_steps == 100  # four times the data, four times the steps
    with pytest.raises(errors.DatasetError, match="no training frames"):
        config.for_training_frames(0)
    for bad, match in (
        ({"num_train_epochs": 0.0}, "num_train_epochs must be > 0"),
        ({"val_every_epochs": 1.0}, "val_every_epochs needs num_train_epochs"),
        ({"siglip_lr_scale": 0.0}, "freeze_mode siglip_only"),
        ({"value_target": "one_hot"}, "value_target 'one_hot'"),
        ({"hl_gauss_sigma": -1.0}, "hl_gauss_sigma"),
        ({"pretrained_backbones": ("siglip", "t5")}, r"\['t5'\]"),
        ({"early_stopping": True, "data": dataclasses.replace(base.data, val_fraction=0.0)}, "val_fraction > 0"),
    ):
        with pytest.raises(errors.ConfigError, match=match):
            dataclasses.replace(base, **bad)
    # An explicit --num_train_steps wins over a config's epochs; the new flags reach the config.
    epochs = dataclasses.replace(base, num_train_epochs=3.0, val_every_epochs=1.0)
    assert value_config.ValueOverrides(num_train_steps=7).apply(epochs).num_train_epochs is None
    flags = value_config.ValueOverrides(
        num_train_epochs=4.0, early_stopping=True, value_target="hl_gauss", siglip_lr_scale=0.1
    ).apply(base)
    assert (flags.num_train_epochs, flags.early_stopping, flags.value_target, flags.siglip_lr_scale) == (
        4.0, True, "hl_gauss", 0.1,
    )  # fmt: skip


def test_siglip_lr_scale_scales_only_the_tower():
    """siglip_lr_scale multiplies SigLIP's update (not the new projection's, Gemma3's or the head's) in the trainer's
    optimizer; at 1.0 the optimizer state has the structure it always had, so existing runs resume."""
    base = dataclasses.replace(
        value_config.get_config("value_debug"),
        lr_schedule=_optimizer.CosineDecaySchedule(warmup_steps=0, peak_lr=1e-2, decay_steps=10, decay_lr=1e-3),
    )
    rng = np.random.default_rng(0)
    paths = ("img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel", "img/embedding/kernel", "img/pos_embedding",
             "img/head/kernel", "llm/layer_0/attn/q/w", "value_head/logits/kernel")  # fmt: skip
    params = params_io.unflatten({k: rng.standard_normal((3, 4)).astype(np.float32) for k in paths})
    grads = params_io.unflatten({k: rng.standard_normal((3, 4)).astype(np.float32) for k in paths})
    updates = {}
    for scale in (1.0, 0.1):
        tx = value_train.value_trainer(dataclasses.replace(base, siglip_lr_scale=scale)).tx
        state = tx.init(params)
        for _ in range(3):  # past the first step, where Adam's update is only the sign of the gradient
            update, state = tx.update(grads, state, params)
        updates[scale] = params_io.flatten(update)
        if scale == 1.0:
            plain = _optimizer.create_optimizer(base.optimizer, base.lr_schedule).init(params)
            assert jax.tree.structure(state) == jax.tree.structure(plain)
    assert [k for k in paths if value_train.is_siglip(k)] == list(paths[:3])
    for k in paths:
        expected = 0.1 * updates[1.0][k] if value_train.is_siglip(k) else updates[1.0][k]
        np.testing.assert_allclose(updates[0.1][k], expected, rtol=1e-5, err_msg=k)
        assert np.abs(updates[1.0][k]).max() > 0


def test_epochs_hl_gauss_and_early_stopping_keep_the_best_validation(gemma3_spm_model, tmp_path, monkeypatch):
    """A run with epochs, HL-Gauss targets and early stopping: the steps follow the training frames, and the state
    of the lowest validation cross-entropy (not the last) becomes the run's final checkpoint, its step recorded."""
    root = tmp_path / "ds"
    synthetic.write_dataset(root, synthetic.SyntheticConfig(num_episodes=6, image_size=32, max_length=16))
    config = _config(root, gemma3_spm_model, tmp_path / "run", num_train_epochs=3.0, val_every_epochs=1.0,
                     value_target="hl_gauss", batch_size=8, val_max_frames=8, save_interval=1000)  # fmt: skip
    data = dataclasses.replace(config.data, val_fraction=0.34)
    config = dataclasses.replace(config, data=data, early_stopping=True)
    # The validation CE is what early stopping reads; make the second validation the best one so that the test does
    # not depend on how this tiny model happens to learn.
    fake_ce = itertools.chain([2.0, 1.0], itertools.repeat(3.0))
    real_metrics = value_train.validation_metrics
    monkeypatch.setattr(value_train, "validation_metrics", lambda o: {**real_metrics(o), "val_ce": next(fake_ce)})
    seen = {}
    real_evaluate = value_train.ValueTask.evaluate

    def evaluate(self, state):
        seen[int(state.step)] = params_io.flatten(jax.device_get(self.trainer.inference_params(state)))
        return real_evaluate(self, state)

    monkeypatch.setattr(value_train.ValueTask, "evaluate", evaluate)
    norm_stats.write_for_config(config)
    result = value_train.train(config, progress=False)

    frames = len(value_data.train_frames(lerobot.LeRobotDataset.open(root), config.data))
    steps = int(np.ceil(3 * frames / 8))
    assert [h["step"] for h in result.val_history] == sorted(seen) and len(seen) >= 3
    assert int(result.state.step) == steps == max(seen)
    best = sorted(seen)[1]
    record = value_train.read_early_stopping(config.checkpoint_dir)
    assert record == {"best_step": best, "best_val_ce": 1.0, "last_step": steps, "checkpoint": best - 1}
    assert checkpoints.finished_steps(config.checkpoint_dir) == [best - 1]
    assert value_train.trained_steps(config.checkpoint_dir) == {"steps_trained": steps, "checkpoint_step": best}
    _, params = value_checkpoint.load_value_checkpoint(config.checkpoint_dir)
    for path, leaf in params_io.flatten(params).items():
        np.testing.assert_array_equal(leaf, seen[best][path], err_msg=path)
    assert any(not np.array_equal(seen[best][k], seen[steps][k]) for k in seen[best])
