"""The training data path on a real (synthetic) LeRobot dataset, and the checks that run before compiling."""

import dataclasses
import os
import pathlib
import shutil
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import train_support

from openpi.models import tokenizer as _tokenizer
from openpi.shared import errors
from openpi.shared import normalize
from openpi.training import data_loader as _data_loader
from openpi.training import distributed
from openpi.training import sharding as _sharding
from openpi.training import trainer as _trainer
from openpi.training import wandb_logging
from openpi.training import weight_loaders


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return train_support.make_workspace(tmp_path_factory.mktemp("ws"))


def test_batches_carry_model_inputs_and_the_indicator(workspace, tiny_spm_model):
    cfg = train_support.debug_config(workspace, tiny_spm_model, batch_size=4, num_workers=2)
    loader = _data_loader.create_data_loader(cfg, num_batches=3)
    batches = list(loader)
    batch = batches[0]
    obs, actions, weights = _data_loader.batch_to_model_inputs(batch)
    assert set(obs.images) == {"base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"}
    assert obs.images["base_0_rgb"].shape == (4, 224, 224, 3)
    assert obs.state.shape == (4, 32) and actions.shape == (4, 50, 32) and weights is None
    assert np.all(np.asarray(obs.state)[:, 14:] == 0) and np.all(np.asarray(actions)[..., 14:] == 0)
    assert np.all(np.abs(np.asarray(obs.state)[:, :14]) <= 1.5)  # quantile-normalised
    tok = _tokenizer.PaligemmaTokenizer(cfg.model.max_token_len, tiny_spm_model)
    texts = [
        tok.decode(t[m])
        for b in batches
        for t, m in zip(np.asarray(b["tokenized_prompt"]), np.asarray(b["tokenized_prompt_mask"]), strict=True)
    ]
    assert all((t.startswith("Task: ") and t.endswith("Action:")) or t.endswith("Action: ") for t in texts), texts[0]
    with_clause = sum("Advantage: " in t for t in texts)
    assert 0 < with_clause < len(texts)  # dropout 0.3 removes the clause from some frames only
    # Deterministic whatever the worker count.
    again = next(iter(_data_loader.create_data_loader(dataclasses.replace(cfg, num_workers=0), num_batches=1)))
    np.testing.assert_array_equal(np.asarray(again["tokenized_prompt"]), np.asarray(batch["tokenized_prompt"]))


@pytest.mark.parametrize("workers", [0, 2])
def test_the_frame_cache_changes_no_batch(workspace, tiny_spm_model, workers):
    """Cached frames give the uncached batches bit for bit, indicator dropout included, over several epochs."""
    cfg = train_support.debug_config(workspace, tiny_spm_model, batch_size=16, num_workers=workers)
    n = len(_data_loader.open_dataset(cfg.data.repo_id))
    steps = 3 * n // 16 + 1  # every frame at least twice, so later epochs come from the cache
    plain = list(_data_loader.create_data_loader(cfg, num_batches=steps))
    cached_cfg = dataclasses.replace(cfg, frame_cache_gb=1.0)
    loader = _data_loader.create_data_loader(cached_cfg, num_batches=steps)
    cached = list(loader)
    assert len(loader._factory.cache) == n and loader._factory.cache.nbytes > 0
    for a, b in zip(plain, cached, strict=True):
        np.testing.assert_array_equal(np.asarray(a["tokenized_prompt"]), np.asarray(b["tokenized_prompt"]))
        np.testing.assert_array_equal(np.asarray(a["actions"]), np.asarray(b["actions"]))
        np.testing.assert_array_equal(np.asarray(a["state"]), np.asarray(b["state"]))
        for cam in a["image"]:
            np.testing.assert_array_equal(np.asarray(a["image"][cam]), np.asarray(b["image"][cam]))
    # A budget smaller than the dataset keeps what fits and reads the rest every time.
    small = dataclasses.replace(cfg, frame_cache_gb=3 * loader._factory.cache.nbytes / n / 2**30)
    tight = _data_loader.create_data_loader(small, num_batches=steps)
    for a, b in zip(plain, tight, strict=True):
        np.testing.assert_array_equal(np.asarray(a["tokenized_prompt"]), np.asarray(b["tokenized_prompt"]))
    assert 0 < len(tight._factory.cache) < n


def test_loss_weight_column_weighs_corrections(workspace, tiny_spm_model):
    cfg = train_support.debug_config(workspace, tiny_spm_model, batch_size=8)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, loss_weight_column="intervention"))
    batch = next(iter(_data_loader.create_data_loader(cfg, num_batches=1)))
    weights = np.asarray(batch["loss_weight"])
    assert weights.shape == (8,) and set(np.unique(weights)) <= {1.0, 2.0}


def test_norm_stats_narrower_than_the_data_are_refused_at_preflight_and_first_batch(
    workspace, tiny_spm_model, tmp_path
):
    """Issue 20.4: 7-dim state stats on 14-dim data normalised dims 0-6 and passed 7-13 through raw."""
    cfg = train_support.debug_config(workspace, tiny_spm_model, batch_size=2)
    stats = normalize.load(pathlib.Path(workspace["assets_base_dir"]) / "yam_synthetic")
    narrow = {**stats, "state": normalize.NormStats(**{k: v[:7] for k, v in stats["state"].to_dict().items()})}
    path = normalize.save(tmp_path / "assets" / "yam_synthetic", narrow)
    reused = dataclasses.replace(cfg, assets_base_dir=str(tmp_path / "assets"))
    with pytest.raises(
        normalize.NormStatsError,
        match=rf"Norm stats for 'state' in {path} have 7 dims but the data has 14, so dims 7-13",
    ):
        _trainer.preflight(reused, _sharding.make_mesh(1))
    with pytest.raises(normalize.NormStatsError, match=r"'state' have 7 dims but the data has 14"):
        next(iter(_data_loader.create_data_loader(reused, num_batches=1)))


def test_preflight_fails_fast_with_one_sentence(workspace, tiny_spm_model, tmp_path):
    mesh = _sharding.make_mesh(1)
    cfg = train_support.debug_config(workspace, tiny_spm_model)
    assert _trainer.preflight(cfg, mesh)[0].norm_stats is not None

    no_stats = dataclasses.replace(cfg, assets_base_dir=str(tmp_path / "nowhere"))
    with pytest.raises(errors.ConfigError, match="compute_norm_stats"):
        _trainer.preflight(no_stats, mesh)

    bad_weights = dataclasses.replace(cfg, weight_loader=weight_loaders.CheckpointWeightLoader(str(tmp_path / "x")))
    with pytest.raises(errors.CheckpointError):
        _trainer.preflight(bad_weights, mesh)

    # A dataset without the RECAP indicator cannot feed a pi0.6 config.
    stripped = tmp_path / "no_adv"
    shutil.copytree(workspace["repo_id"], stripped)
    import pyarrow.parquet as pq

    for path in (stripped / "data").rglob("*.parquet"):
        pq.write_table(pq.read_table(path).drop(["adv_ind"]), path)
    info = (stripped / "meta" / "info.json").read_text().replace('"adv_ind"', '"adv_ind_unused"')
    (stripped / "meta" / "info.json").write_text(info)
    no_adv = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, repo_id=str(stripped)))
    with pytest.raises(errors.DatasetError, match="adv_ind"):
        _trainer.preflight(no_adv, mesh)

    with pytest.raises(errors.ConfigError, match="not divisible"):
        _trainer.preflight(dataclasses.replace(cfg, batch_size=3), _FakeMesh(2))

    with pytest.raises(errors.CheckpointError, match=r"(?i)tokenizer|sentencepiece"):
        _trainer.preflight(dataclasses.replace(cfg, tokenizer_path=str(tmp_path / "missing.model")), mesh)


class _FakeMesh:
    """Just what check_batch_divisible reads: a device count."""

    def __init__(self, n):
        self.devices = np.empty((n,), object)


def test_distributed_flags_and_env(monkeypatch):
    rest, found = distributed.pop_distributed_flags(
        ["--coordinator-address=h:1", "--num-processes", "2", "--process-id=1", "debug", "--exp-name=x"]
    )
    assert rest == ["debug", "--exp-name=x"]
    assert found == {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    for key in ("JAX_NUM_PROCESSES", "SLURM_NTASKS", "OPENPI_DISTRIBUTED"):
        monkeypatch.delenv(key, raising=False)
    assert not distributed.maybe_initialize_distributed()
    with pytest.raises(errors.ConfigError, match="JAX_COORDINATOR_ADDRESS"):
        distributed.maybe_initialize_distributed({"JAX_NUM_PROCESSES": "2"})


def test_wandb_missing_means_console_only(workspace, tiny_spm_model, caplog):
    cfg = train_support.debug_config(workspace, tiny_spm_model, wandb_enabled=True, exp_name="w")
    pathlib.Path(cfg.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    try:
        import wandb  # noqa: F401

        pytest.skip("wandb is installed here")
    except ImportError:
        pass
    run = wandb_logging.WandbLogger(cfg, resuming=False)
    assert run.run is None and "wandb is not installed" in caplog.text
    run.log({"loss": 1.0}, 0)
    run.finish()


def test_nan_loss_stops_with_a_clear_error(workspace, tiny_spm_model):
    cfg = train_support.debug_config(workspace, tiny_spm_model)
    _trainer.check_finite_loss(np.array([1.0, 2.0]), 5, cfg.name)
    with pytest.raises(errors.UserError, match="NaN/inf by step 5 of debug_pi06"):
        _trainer.check_finite_loss(np.array([1.0, np.nan]), 5, cfg.name)


def test_cli_user_errors_exit_2_with_one_line(tmp_path):
    import subprocess

    script = train_support.REPO / "scripts" / "train.py"
    proc = subprocess.run(
        [sys.executable, str(script), "debug_pi6", "--exp-name=x"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "did you mean 'debug_pi06'" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_indicator_values_are_found_before_training(workspace, tiny_spm_model, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad_adv"
    shutil.copytree(workspace["repo_id"], bad)
    path = sorted((bad / "data").rglob("*.parquet"))[0]
    table = pq.read_table(path)
    values = table.column("adv_ind").to_pylist()
    values[3] = "maybe"
    table = table.set_column(table.schema.get_field_index("adv_ind"), "adv_ind", pa.array(values))
    pq.write_table(table, path)
    cfg = train_support.debug_config(workspace, tiny_spm_model)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, repo_id=str(bad)))
    with pytest.raises(errors.DatasetError, match=r"'adv_ind' is 'maybe' at episode 0, frame 3 \(index 3\)"):
        _trainer.preflight(cfg, _sharding.make_mesh(1))


@pytest.mark.parametrize("missing", ["actions", "state"])
def test_norm_stats_without_a_policy_key_are_refused_at_preflight_and_first_batch(
    workspace, tiny_spm_model, tmp_path, missing
):
    """Issue 29.3: stats without 'actions' (a value config's state-only file, say) trained on raw actions."""
    cfg = train_support.debug_config(workspace, tiny_spm_model, batch_size=2)
    stats = normalize.load(pathlib.Path(workspace["assets_base_dir"]) / "yam_synthetic")
    path = normalize.save(tmp_path / "assets" / "yam_synthetic", {k: v for k, v in stats.items() if k != missing})
    reused = dataclasses.replace(cfg, assets_base_dir=str(tmp_path / "assets"))
    message = rf"{path} has no {missing!r} entry .* recompute the norm stats for this config .*compute_norm_stats.py"
    with pytest.raises(normalize.NormStatsError, match=message):
        _trainer.preflight(reused, _sharding.make_mesh(1))
    with pytest.raises(normalize.NormStatsError, match=message):
        next(iter(_data_loader.create_data_loader(reused, num_batches=1)))


def test_the_item_factory_checks_each_frames_indicator_itself(workspace, tiny_spm_model, tmp_path):
    """Issue 29.13: `PolicyItemFactory` used directly (without the loader's dataset check) read "None" as no
    indicator and trained the frame on the unconditional prompt."""
    from openpi.datasets import lerobot

    cfg = train_support.debug_config(workspace, tiny_spm_model, batch_size=2)
    ds = lerobot.LeRobotDataset.open(workspace["repo_id"])
    cells = np.asarray(ds.column("adv_ind")).reshape(len(ds)).astype(object)
    bad = ds.episodes[1].from_index + 2
    cells[bad] = "None"
    edited = lerobot.copy_with_columns(ds, tmp_path / "edited", {"adv_ind": cells.astype(str)})
    data_config = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, repo_id=str(edited.root)))
    item = _data_loader.PolicyItemFactory(data_config.create_data_config(), cfg.model, edited)()
    assert "tokenized_prompt" in item(bad - 1, 0)  # its neighbours are fine
    with pytest.raises(errors.DatasetError, match=r"'adv_ind' is 'None' at episode 1, frame 2 \(index \d+\)"):
        item(bad, 0)
