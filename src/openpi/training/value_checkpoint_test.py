"""Value checkpoints: the data side (norm stats, cameras) is loaded from the step, and never silently dropped."""

import dataclasses
import json
import pathlib

import pytest

from openpi.datasets import synthetic
from openpi.models import params_io
from openpi.models import value_model
from openpi.shared import errors
from openpi.training import norm_stats
from openpi.training import value_checkpoint
from openpi.training import value_config
from openpi.training import value_train

CAMERAS = (("cam_high", synthetic.HEAD_CAMERA), ("cam_left_wrist", synthetic.LEFT_WRIST_CAMERA))


def _train(root: pathlib.Path, run_dir: pathlib.Path, tokenizer) -> pathlib.Path:
    """A real one-step tiny value run (saved at step 1) on the synthetic dataset at `root`."""
    base = value_config.get_config("value_debug")
    data = dataclasses.replace(base.data, repo_id=str(root), val_fraction=0.0, cameras=CAMERAS, augment=False)
    config = dataclasses.replace(
        base, model=value_model.tiny_config(freeze_mode="all_backbones"), data=data,
        tokenizer_path=str(tokenizer), checkpoint_dir_override=str(run_dir), assets_base_dir=str(run_dir) + "_assets", batch_size=2, num_workers=0,
        num_train_steps=2, save_interval=10, val_interval=10**6, log_interval=100, keep_period=None, overwrite=True,
    )  # fmt: skip
    norm_stats.write_for_config(config)  # as scripts/compute_norm_stats.py <value config>
    value_train.train(config, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory, gemma3_spm_model) -> tuple[pathlib.Path, pathlib.Path]:
    tmp = tmp_path_factory.mktemp("value_ckpt")
    root = tmp / "ds"
    synthetic.write_dataset(root, synthetic.SyntheticConfig(num_episodes=3, image_size=32, max_length=16))
    return root, _train(root, tmp / "run", gemma3_spm_model)


def test_step_sha256_is_the_same_for_two_runs_with_identical_weights(run, tmp_path, gemma3_spm_model):
    """Issue 31.3: the labeller's checkpoint digest hashes array contents, not Orbax's timestamped files."""
    import shutil

    import orbax.checkpoint as ocp

    root, first = run
    second = _train(root, tmp_path / "second", gemma3_spm_model)
    assert (first / "1" / "_CHECKPOINT_METADATA").read_bytes() != (second / "1" / "_CHECKPOINT_METADATA").read_bytes()
    a, b = value_checkpoint.fingerprint(first, first / "1"), value_checkpoint.fingerprint(second, second / "1")
    assert a["run"] != b["run"] and a["step_sha256"] == b["step_sha256"] and a["frozen_sha256"] == b["frozen_sha256"]

    # One changed weight (written back with Orbax) or one changed plain file changes the digest.
    changed = tmp_path / "changed"
    shutil.copytree(first, changed)
    params = params_io.restore_params(changed / "1" / "params")
    flat = params_io.flatten(params)
    name = sorted(flat)[0]
    flat[name] = flat[name].copy()
    flat[name].flat[0] += 1
    shutil.rmtree(changed / "1" / "params")
    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save(changed / "1" / "params", {"params": params_io.unflatten(flat)})
    assert value_checkpoint.step_sha256(changed / "1") != a["step_sha256"]
    shutil.rmtree(changed)
    shutil.copytree(first, changed)
    (changed / "1" / value_checkpoint.CONFIG_FILE).write_text("{}")
    assert value_checkpoint.step_sha256(changed / "1") != a["step_sha256"]


def test_missing_value_norm_stats_are_an_error(run, tmp_path):
    """Issue 14.6: a step without its state norm stats must not load as "no normalisation"."""
    import shutil

    _, run_dir = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert value_checkpoint.load_value_inputs(copy).norm_stats is not None
    shutil.rmtree(copy / "1" / "assets")
    with pytest.raises(errors.CheckpointError, match="norm stats"):
        value_checkpoint.load_value_inputs(copy)


def test_labeller_reads_the_steps_own_metadata(run, tmp_path):
    """Issue 14.8: one source of truth per step; the run-root JSON (written at the start) is not consulted."""
    import shutil

    _, run_dir = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    root_meta = json.loads((copy / value_checkpoint.CONFIG_FILE).read_text())
    root_meta["data"]["cameras"] = [["cam_high", "observation.images.stale"], ["cam_left_wrist", "stale"]]
    (copy / value_checkpoint.CONFIG_FILE).write_text(json.dumps(root_meta))
    assert value_checkpoint.load_value_inputs(copy).data.cameras == CAMERAS
    (copy / "1" / value_checkpoint.CONFIG_FILE).unlink()
    with pytest.raises(errors.CheckpointError, match=value_checkpoint.CONFIG_FILE):
        value_checkpoint.load_value_inputs(copy)
    with pytest.raises(errors.CheckpointError, match=value_checkpoint.CONFIG_FILE):
        value_checkpoint.load_value_checkpoint(copy)
