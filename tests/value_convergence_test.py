"""Done-when check of the value model: at dummy size on the synthetic dataset it ranks held-out episodes' frames.

`value_demo` (dummy Gemma3, SigLIP mu/16 at 64 px, 300 steps at batch 32) on the 24-episode synthetic YAM
dataset, validated on 5 held-out episodes (split by episode). ~2 min on 2 idle CPU cores, hence `slow`.
"""

import dataclasses
import math

from openpi.datasets import synthetic
from openpi.training import norm_stats
from openpi.training import value_config
from openpi.training import value_train


# About a minute on 2 cores: part of the default suite because it is the value model's acceptance test.
def test_value_demo_learns_held_out_episodes(tmp_path, gemma3_spm_model):
    root = tmp_path / "yam_synthetic"
    synthetic.write_dataset(root, synthetic.SyntheticConfig(num_episodes=24, image_size=64))
    base = value_config.get_config("value_demo")
    config = dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, repo_id=str(root)),
        tokenizer_path=str(gemma3_spm_model),
        checkpoint_dir_override=str(tmp_path / "run"),
        assets_base_dir=str(tmp_path / "assets"),
        overwrite=True,
    )
    norm_stats.write_for_config(config)
    result = value_train.train(config, progress=False)
    final = result.val_history[-1]
    assert final["step"] == config.num_train_steps
    assert final["val_spearman"] >= 0.9, result.val_history
    assert final["val_ce"] < math.log(201) - 1.0, result.val_history  # uniform prediction: ln 201 = 5.30
    assert final["val_mae"] < 0.15, result.val_history
