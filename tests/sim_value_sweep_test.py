"""benchmarks/sim_value_sweep.py at toy budget: the BC policy is trained first, the value model starts from its
SigLIP, and a lever row (SigLIP at a tenth of the rate, epochs, early stopping) is trained and scored on the
validation layouts. Run as the real command (tests never import a script)."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from openpi.datasets import lerobot
from openpi.models import params_io
from openpi.training import value_checkpoint
from openpi.training import value_train

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_toy_value_sweep_starts_from_the_bc_siglip_and_scores_on_validation_layouts(tmp_path):
    out = tmp_path / "sweep"
    variants = ["warm_frozen", "warm_lr0.1_epochs20_es"]
    cmd = [sys.executable, str(REPO / "benchmarks" / "sim_value_sweep.py"), "--budget", "toy", "--variants", *variants,
           "--heldout-per-task", "2", "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=tmp_path, timeout=600)
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["ranking"]) == sorted(variants) and results["validation_seed"] == 600_000
    for name in ("heldout_corrected", "heldout_uncorrected"):
        seeds = np.asarray(lerobot.LeRobotDataset.open(out / "data" / name).column("sim.seed")).reshape(-1)
        assert seeds.min() >= 600_000 and seeds.max() < 700_000  # validation layouts, never the experiment's

    # The frozen SigLIP is the BC policy's, leaf for leaf, read from the BC run's checkpoint.
    frozen_run = out / "checkpoints" / "value" / "warm_frozen"
    meta = json.loads((frozen_run / value_checkpoint.FROZEN_META).read_text())
    bc_params = pathlib.Path(meta["sources"]["siglip"])
    assert bc_params.parent.parent == out / "checkpoints" / "sim_pi05" / "bc" and bc_params.name == "params"
    policy_img = params_io.flatten(params_io.restore_params(bc_params)["PaliGemma"]["img"])
    _, params = value_checkpoint.load_value_checkpoint(frozen_run)
    img = {k.removeprefix("img/"): v for k, v in params_io.flatten(params).items() if value_train.is_siglip(k)}
    assert img and set(img) <= set(policy_img)
    for path, leaf in img.items():
        np.testing.assert_array_equal(leaf, policy_img[path], err_msg=path)

    # Early stopping kept one of the validated steps, and the run records which.
    row = results["variants"]["warm_lr0.1_epochs20_es"]
    assert 1 <= row["checkpoint_step"] <= row["steps_trained"]
    es_run = out / "checkpoints" / "value" / "warm_lr0.1_epochs20_es"
    assert value_train.read_early_stopping(es_run)["best_step"] == row["checkpoint_step"]
    assert np.isfinite(row["heldout_corrected"]["progress_spearman_vs_return"])


def test_toy_value_sweep_on_metaworld_trains_the_state_token_model_and_grades_its_labels(tmp_path):
    """`--env metaworld`: no camera, so no BC policy to warm-start from; each row is the state-token value model,
    scored on validation layouts and graded by the labels it gives the iteration-0 data."""
    pytest.importorskip("metaworld")
    out = tmp_path / "sweep"
    cmd = [sys.executable, str(REPO / "benchmarks" / "sim_value_sweep.py"), "--budget", "toy", "--env", "metaworld",
           "--variants", "hlgauss", "--heldout-per-task", "1", "--lookaheads", "1", "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=tmp_path, timeout=600)
    results = json.loads((out / "results.json").read_text())
    assert results["env"] == "metaworld" and results["tasks"] == ["push-v3"]
    assert results["value_config"] == "value_sim_metaworld" and "bc_train_s" not in results
    assert not (out / "checkpoints" / "sim_pi0_metaworld").exists()
    row = results["variants"]["hlgauss"]
    assert row["labels"]["autonomous_frames"] > 0
    assert 0.0 <= row["labels"]["clean_fraction_of_autonomous"] <= 1.0
    # The same values labelled at another lookahead: the same frames, graded the same way.
    assert row["labels_lookahead1"]["autonomous_frames"] == row["labels"]["autonomous_frames"]
    assert (out / "data" / "relabelled_hlgauss_n1").is_dir() and (out / "data" / "relabelled_hlgauss_n10").is_dir()
    seeds = np.asarray(lerobot.LeRobotDataset.open(out / "data" / "heldout_corrected").column("sim.seed")).reshape(-1)
    assert seeds.min() >= 600_000 and seeds.max() < 700_000
    config = json.loads((out / "checkpoints" / "value" / "hlgauss" / "value_model.json").read_text())
    assert config["model"]["state_dim"] == 39 and config["model"]["prompt_format"] == "task"
