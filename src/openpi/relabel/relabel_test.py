"""The labeller on a real (tiny, 2-step) value checkpoint: device-resident params, label provenance."""

import dataclasses
import pathlib

import jax
import numpy as np
import pytest

from openpi.datasets import lerobot
from openpi.datasets import synthetic
from openpi.models import value_model
from openpi.relabel import relabel
from openpi.training import data_loader
from openpi.training import norm_stats
from openpi.training import optimizer as _optimizer
from openpi.training import value_config
from openpi.training import value_train

TINY = value_model.tiny_config(cameras=("base_0_rgb",), freeze_mode="all_backbones")


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
        assets_base_dir=str(tmp / "run") + "_assets",
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
    norm_stats.write_for_config(config)  # as scripts/compute_norm_stats.py <value config>
    value_train.train(config, progress=False)
    return root, tmp / "run", pathlib.Path(gemma3_spm_model)


def _config(setup, out: pathlib.Path, **kw) -> relabel.RelabelConfig:
    root, run, tokenizer = setup
    fields = {"data_dir": str(root), "batch_size": 4, "lookahead": 3, "num_workers": 0, "progress": False, **kw}
    return relabel.RelabelConfig(checkpoint_dir=str(run), output_dir=str(out), tokenizer_path=str(tokenizer), **fields)


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


def test_relabel_records_provenance_and_keys_the_cache_on_content(setup, tmp_path):
    """Issue 14.7: the output's meta/recap.json says how adv_ind was made; the value cache is keyed on the source's
    content, so a dataset re-exported at the same path with other frames does not reuse stale values."""
    import shutil

    from openpi.recap import provenance

    root, _, _ = setup
    src = tmp_path / "src"
    shutil.copytree(root, src)
    scale = provenance.LabelScale("paper", None, {"pick up the vial": 16})
    provenance.write(src, {"label_scale": scale.to_json()})
    first = relabel.relabel(_config(setup, tmp_path / "out", data_dir=str(src)))
    meta = provenance.read(tmp_path / "out")
    assert provenance.LabelScale.from_json(meta["label_scale"], "out") == scale
    info = meta["relabel"]
    assert info["lookahead"] == 3 and info["top_percent"] == 30.0 and info["adv_col"] == "adv_ind"
    assert info["source"]["fingerprint"] == provenance.dataset_fingerprint(src)
    assert info["value_checkpoint"]["step"] == "1" and len(info["value_checkpoint"]["step_sha256"]) == 64
    ds = lerobot.LeRobotDataset.open(src)
    assert set(info["thresholds"]) == {ds.tasks[t] for t in first.result.thresholds}

    # Same path, same shape, other frames (a re-export): nothing may come from the cache.
    state = np.asarray(ds.column("observation.state"))
    shutil.rmtree(tmp_path / "other", ignore_errors=True)
    lerobot.copy_with_columns(ds, tmp_path / "other", {"observation.state": state[::-1].copy()})
    shutil.rmtree(src)
    (tmp_path / "other").rename(src)
    again = relabel.relabel(_config(setup, tmp_path / "out", data_dir=str(src), overwrite=True))
    assert again.stats["frames_cached"] == 0 and again.stats["frames_computed"] == first.stats["frames_computed"]
    # Unchanged content: the cache serves everything.
    third = relabel.relabel(_config(setup, tmp_path / "out", data_dir=str(src), overwrite=True))
    assert third.stats["frames_cached"] == third.stats["frames_total"]
