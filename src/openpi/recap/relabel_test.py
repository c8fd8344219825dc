"""The labeller on a real (tiny, 2-step) value checkpoint: device-resident params, label provenance."""

import dataclasses
import pathlib

import jax
import numpy as np
import pytest

from openpi.datasets import lerobot
from openpi.datasets import synthetic
from openpi.models import value_model as vm
from openpi.recap import relabel
from openpi.training import data_loader
from openpi.training import optimizer as _optimizer
from openpi.training import value_config
from openpi.training import value_train

TINY = vm.ValueModelConfig(
    siglip_variant="mu/16",
    gemma3_variant="dummy",
    image_resolution=(32, 32),
    max_token_len=16,
    dtype="float32",
    cameras=("base_0_rgb",),
    readout="mean",
    freeze_mode="all_backbones",
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, gemma3_spm_model) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    tmp = tmp_path_factory.mktemp("relabel")
    root = tmp / "ds"
    synthetic.write_dataset(root, synthetic.SyntheticConfig(num_episodes=4, image_size=32, max_length=16))
    base = value_config.get_config("value_debug")
    data = dataclasses.replace(
        base.data, repo_id=str(root), val_fraction=0.0, cameras=(("cam_high", synthetic.HEAD_CAMERA),), augment=False
    )
    config = dataclasses.replace(
        base,
        model=TINY,
        data=data,
        tokenizer_path=str(gemma3_spm_model),
        checkpoint_dir_override=str(tmp / "run"),
        batch_size=2,
        num_workers=0,
        num_train_steps=2,
        save_interval=10,
        val_interval=10**6,
        log_interval=100,
        keep_period=None,
        overwrite=True,
        lr_schedule=_optimizer.CosineDecaySchedule(warmup_steps=1, peak_lr=1e-3, decay_steps=20, decay_lr=1e-4),
    )
    value_train.train(config, progress=False)
    return root, tmp / "run", pathlib.Path(gemma3_spm_model)


def _config(setup, out: pathlib.Path, **kw) -> relabel.RelabelConfig:
    root, run, tokenizer = setup
    defaults = {"batch_size": 4, "lookahead": 3, "num_workers": 0, "progress": False, **kw}
    return relabel.RelabelConfig(
        data_dir=str(root), checkpoint_dir=str(run), output_dir=str(out), tokenizer_path=str(tokenizer), **defaults
    )


def test_value_params_stay_on_the_device(setup, tmp_path):
    """Issue 14.11: no batch may copy the value model host->device again (only the batch itself travels)."""
    root, _, _ = setup
    ds = lerobot.LeRobotDataset.open(root)
    factory, values_fn, _ = relabel.load_model(_config(setup, tmp_path / "out"), ds)
    item_fn = factory()
    batch = data_loader.stack_items([item_fn(i, i) for i in range(4)])
    expected = values_fn(batch)
    assert expected.shape == (4,) and np.all(np.isfinite(expected))
    with jax.transfer_guard_host_to_device("disallow"):  # implicit copies (numpy params into jit) are refused
        for _ in range(2):
            np.testing.assert_array_equal(values_fn(batch), expected)
