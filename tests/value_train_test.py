"""Value-model training end to end: synthetic LeRobot data -> trainer -> checkpoints -> loader API."""

import dataclasses
import json
import logging
import pathlib

import jax
import numpy as np
import pytest

from openpi.datasets import lerobot
from openpi.datasets import synthetic
from openpi.models import params_io
from openpi.models import value_model as vm
from openpi.shared import errors
from openpi.shared import normalize as _normalize
from openpi.training import checkpoints
from openpi.training import norm_stats
from openpi.training import optimizer as _optimizer
from openpi.training import utils as _utils
from openpi.training import value_checkpoint
from openpi.training import value_config
from openpi.training import value_data
from openpi.training import value_train

TINY = vm.ValueModelConfig(
    siglip_variant="mu/16",
    gemma3_variant="dummy",
    image_resolution=(32, 32),
    max_token_len=16,
    dtype="float32",
    cameras=("base_0_rgb", "left_wrist_0_rgb"),
    readout="mean",
)


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("value_data") / "yam_synthetic"
    synthetic.write_dataset(root, synthetic.SyntheticConfig(num_episodes=6, image_size=32, max_length=16))
    return root


def _config(root, tokenizer, run_dir, **kw) -> value_config.ValueTrainConfig:
    base = value_config.get_config("value_debug")
    data = dataclasses.replace(
        base.data,
        repo_id=str(root),
        val_fraction=0.34,
        cameras=(("cam_high", synthetic.HEAD_CAMERA), ("cam_left_wrist", synthetic.LEFT_WRIST_CAMERA)),
    )
    defaults = {
        "model": TINY,
        "data": data,
        "tokenizer_path": str(tokenizer),
        "checkpoint_dir_override": str(run_dir),
        "assets_base_dir": str(pathlib.Path(run_dir).parent / "assets"),
        "batch_size": 4,
        "num_workers": 0,
        "num_train_steps": 6,
        "save_interval": 3,
        "val_interval": 3,
        "log_interval": 100,
        "keep_period": 1,
        "val_max_frames": 8,
        "overwrite": True,
        "lr_schedule": _optimizer.CosineDecaySchedule(warmup_steps=1, peak_lr=1e-3, decay_steps=20, decay_lr=1e-4),
    }
    defaults.update(kw)
    return dataclasses.replace(base, **defaults)


def _train(config: value_config.ValueTrainConfig, **kw):
    """Norm stats through the assets code (as `scripts/compute_norm_stats.py <config>`), then training."""
    norm_stats.write_for_config(config)
    return value_train.train(config, **kw)


def test_split_by_episode_and_legacy_column(dataset_root, gemma3_spm_model, tmp_path):
    train, val = value_data.split_episodes(10, 0.2, seed=3)
    assert len(val) == 2 and sorted([*train, *val]) == list(range(10))
    assert np.array_equal(val, value_data.split_episodes(10, 0.2, seed=3)[1])
    assert len(value_data.split_episodes(1, 0.5, seed=0)[1]) == 0  # a single episode is never held out

    # An older tool's dataset spells the column `value_lable`: it is read as the target.
    episodes = synthetic.generate(synthetic.SyntheticConfig(num_episodes=2, image_size=32, max_length=16))
    features = synthetic.features(32)
    features["value_lable"] = features.pop("value_label")
    writer = lerobot.LeRobotDatasetWriter.create(tmp_path / "legacy", fps=10, features=features, robot_type="yam")
    with writer:
        for ep in episodes:
            frames = dict(ep.frames)
            frames["value_lable"] = frames.pop("value_label")
            writer.add_episode(frames, ep.task)
        ds = writer.finalize()
    data = value_config.ValueDataConfig(repo_id=str(tmp_path / "legacy"))
    factory = value_data.ValueItemFactory(data, TINY, None, str(gemma3_spm_model))
    item = factory()(3, 0)
    assert item["value"] == pytest.approx(float(episodes[0].frames["value_label"][3].reshape(())))
    assert item["image"]["base_0_rgb"].shape == (32, 32, 3) and item["tokenized_prompt"].shape == (16,)
    assert set(item["image_mask"]) == {"base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"}
    assert ds.num_episodes == 2


def _fake_batch(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    cams = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
    return {
        "image": {c: rng.integers(0, 255, (batch, 32, 32, 3), dtype=np.uint8) for c in cams},
        "image_mask": {c: np.ones((batch,), bool) for c in cams},
        "state": rng.normal(size=(batch, 14)).astype(np.float32),
        "tokenized_prompt": rng.integers(4, 400, (batch, 16)).astype(np.int32),
        "tokenized_prompt_mask": np.arange(16)[None].repeat(batch, 0) < 9,
        "value": np.array([-0.2, -0.8][:batch], np.float32),
    }


@pytest.mark.parametrize("freeze_mode", ["all_backbones", "siglip_only", "none"])
def test_freeze_modes_train_exactly_the_intended_subtrees(freeze_mode):
    config = dataclasses.replace(
        value_config.get_config("value_debug"),
        model=dataclasses.replace(TINY, freeze_mode=freeze_mode),
        lr_schedule=_optimizer.CosineDecaySchedule(warmup_steps=0, peak_lr=1e-2, decay_steps=10, decay_lr=1e-3),
        ema_decay=0.5,
    )
    trainer = value_train.value_trainer(config)
    state = trainer.init(jax.random.key(0))
    new_state, info = jax.jit(trainer.step)(jax.random.key(1), state, _fake_batch())
    assert np.isfinite(info["loss"]) and np.isfinite(info["grad_norm"])
    before, after = params_io.flatten(state.params), params_io.flatten(new_state.params)
    changed = {k for k in before if not np.array_equal(np.asarray(before[k]), np.asarray(after[k]))}

    def group(path):
        if path.startswith("img/head/"):
            return "projection"
        return path.split("/")[0]  # img, llm, value_head

    expected_frozen = {"all_backbones": {"img", "llm"}, "siglip_only": {"img"}, "none": set()}[freeze_mode]
    for path in before:
        if group(path) in expected_frozen:
            assert path not in changed, f"{path} is frozen in {freeze_mode} but changed"
    # Everything trainable that has a gradient moves (the embedding rows of unseen tokens have none).
    trainable = [p for p in before if group(p) not in expected_frozen and "input_embedding" not in p]
    assert trainable and all(p in changed for p in trainable), sorted(set(trainable) - changed)[:5]
    # The optimizer state and the EMA exist for the trainable leaves only.
    trainable_flat, frozen_flat = _utils.split_params(state.params, trainer.is_frozen)
    assert set(new_state.ema_params) == set(trainable_flat)
    assert {group(p) for p in frozen_flat} == expected_frozen
    n_opt = sum(x.size for x in jax.tree.leaves(state.opt_state))
    assert n_opt >= 2 * _utils.count_params(trainable_flat) and n_opt < 2 * _utils.count_params(trainable_flat) + 100


def test_frozen_backbones_use_the_compute_dtype():
    config = dataclasses.replace(
        value_config.get_config("value_debug"),
        model=dataclasses.replace(TINY, dtype="bfloat16", freeze_mode="all_backbones"),
    )
    trainer = value_train.value_trainer(config)
    shapes = jax.eval_shape(trainer.init, jax.random.key(0))
    flat = params_io.flatten(shapes.params)
    assert flat["llm/layer_0/attn/q_einsum/w"].dtype == np.dtype("bfloat16")
    assert flat["img/embedding/kernel"].dtype == np.dtype("bfloat16")
    assert flat["img/head/kernel"].dtype == np.float32 and flat["value_head/logits/kernel"].dtype == np.float32


def test_train_checkpoint_resume_and_load(dataset_root, gemma3_spm_model, tiny_spm_model, tmp_path, caplog):
    common = {"model": dataclasses.replace(TINY, freeze_mode="all_backbones")}
    full = _train(_config(dataset_root, gemma3_spm_model, tmp_path / "full", **common), progress=False)
    assert [h["step"] for h in full.val_history] == [3, 6]
    assert all(np.isfinite(h["val_ce"]) and np.isfinite(h["val_mae"]) for h in full.val_history)

    # Stop after 4 steps (checkpoint at step index 3), then resume to 6.
    _train(_config(dataset_root, gemma3_spm_model, tmp_path / "stopped", num_train_steps=4, **common), progress=False)
    # The assets' stats change before the resume (recomputed, or another dataset): the resumed run must keep
    # normalising with the stats it started with (those saved with its steps), and say that the assets differ.
    resume_config = _config(
        dataset_root, gemma3_spm_model, tmp_path / "stopped", resume=True, overwrite=False, **common
    )
    assets_dir = resume_config.data.norm_stats_dirs(resume_config.assets_dirs)[0]
    started_with = _normalize.load(assets_dir)
    _normalize.save(assets_dir, {k: dataclasses.replace(v, mean=v.mean + 1.0) for k, v in started_with.items()})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=value_train.logger.name):
        resumed = value_train.train(resume_config, progress=False)
    assert any("differ from those the run started with" in r.getMessage() for r in caplog.records)
    saved = checkpoints.restore_norm_stats(tmp_path / "stopped" / "5", value_checkpoint.ASSET_ID)
    assert all(saved[k].allclose(started_with[k], atol=0) for k in started_with)
    for a, b in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(resumed.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(full.state.opt_state), jax.tree.leaves(resumed.state.opt_state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    run = tmp_path / "full"
    # Frozen backbones stored once; steps hold only the trainable subtree (projection + value head).
    assert (run / value_checkpoint.FROZEN_DIR).is_dir() and (run / value_checkpoint.FROZEN_META).is_file()
    step_params = params_io.restore_params(run / "5" / "params")
    assert set(step_params) == {"img", "value_head"} and set(step_params["img"]) == {"head"}
    meta = json.loads((run / "5" / value_checkpoint.CONFIG_FILE).read_text())
    assert meta["model"]["cameras"] == ["base_0_rgb", "left_wrist_0_rgb"]
    assert meta["data"]["cameras"][1] == ["cam_left_wrist", synthetic.LEFT_WRIST_CAMERA]

    model, ema_params = value_checkpoint.load_value_checkpoint(run)
    _, raw_params = value_checkpoint.load_value_checkpoint(run / "5", use_ema=False)
    assert model == common["model"]
    trainable, frozen = _utils.split_params(full.state.params, value_train.freeze_filter("all_backbones"))
    flat_raw = params_io.flatten(raw_params)
    for k, v in {**trainable, **frozen}.items():
        np.testing.assert_array_equal(flat_raw[k], np.asarray(v))
    flat_ema = params_io.flatten(ema_params)
    for k, v in full.state.ema_params.items():
        np.testing.assert_array_equal(flat_ema[k], np.asarray(v))

    # The labeller's path: rebuild the item pipeline from the checkpoint and predict in a batch.
    inputs = value_checkpoint.load_value_inputs(run)
    assert inputs.data.cameras == (("cam_high", synthetic.HEAD_CAMERA), ("cam_left_wrist", synthetic.LEFT_WRIST_CAMERA))
    item_fn = inputs.item_factory(model, repo_id=str(dataset_root), tokenizer_path=str(gemma3_spm_model))()
    assert "value" not in item_fn(0, 0)
    with pytest.raises(errors.ConfigError, match="not the one this value model was trained with"):
        inputs.item_factory(model, repo_id=str(dataset_root), tokenizer_path=str(tiny_spm_model))
    from openpi.training import data_loader

    batch = data_loader.stack_items([item_fn(i, i) for i in range(3)])
    values = np.asarray(value_checkpoint.predict_values(model, ema_params, batch))
    assert values.shape == (3,) and np.all((values >= -1) & (values <= 0))

    # A damaged frozen store is refused.
    (run / value_checkpoint.FROZEN_META).write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(errors.CheckpointError, match="checksum"):
        value_checkpoint.load_value_checkpoint(run)
    # Resuming with a different model (other cameras) is refused.
    other = dataclasses.replace(common["model"], cameras=("base_0_rgb",))
    with pytest.raises(errors.ConfigError, match="model config differs"):
        _train(
            _config(dataset_root, gemma3_spm_model, tmp_path / "stopped", resume=True, overwrite=False, model=other),
            progress=False,
        )


def test_cli_flags():
    config = value_config.cli(
        ["value_demo", "--data_dir=/d", "--batch-size", "8", "--freeze_mode=siglip_only", "--peak_lr=0.5",
         "--no-use-ema", "--checkpoint_dir=/tmp/x", "--num_train_steps=7", "--val-interval=2", "--resume"]
    )  # fmt: skip
    assert config.data.repo_id == "/d" and config.batch_size == 8 and config.num_train_steps == 7
    assert config.model.freeze_mode == "siglip_only" and config.lr_schedule.peak_lr == 0.5
    assert config.ema_decay is None and config.val_interval == 2 and config.resume and not config.overwrite
    assert config.checkpoint_dir == pathlib.Path("/tmp/x")
    with pytest.raises(errors.ConfigError, match="value_demo"):
        value_config.cli(["value_dem"])
    with pytest.raises(errors.ConfigError, match="Name a value config"):
        value_config.cli(["--data_dir=/d"])
    assert {"value_debug", "value_demo", "value_yam_vial_30fps"} <= set(value_config.config_names())
