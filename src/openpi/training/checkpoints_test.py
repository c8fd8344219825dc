import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from openpi.models import params_io
from openpi.shared import errors
from openpi.shared import normalize
from openpi.training import checkpoints


def _state():
    params = {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.ones(3)}}
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    opt_state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return params, {"step": jnp.asarray(1), "opt_state": opt_state, "params": optax.apply_updates(params, updates)}


def test_save_restore_layout_and_assets(tmp_path):
    run = tmp_path / "cfg" / "exp"
    mngr, resuming = checkpoints.initialize_checkpoint_dir(run, keep_period=None, overwrite=False, resume=False)
    assert not resuming
    params, train_state = _state()
    stats = normalize.NormStats(mean=[0.0, 1.0], std=[1.0, 2.0], q01=[-1.0, -1.0], q99=[1.0, 1.0])
    checkpoints.save(mngr, 1, params=params, train_state=train_state, norm_stats={"yam": {"state": stats}})
    mngr.wait_until_finished()
    assert {"assets", "params", "train_state"} <= {p.name for p in (run / "1").iterdir()}
    assert (run / "1" / "assets" / "yam" / "norm_stats.json").is_file()
    # params/ is an openpi params checkpoint that the shared loader reads.
    loaded = params_io.restore_params(run / "1" / "params", restore_type=np.ndarray)
    np.testing.assert_array_equal(loaded["dense"]["kernel"], np.asarray(params["dense"]["kernel"]))
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), train_state)
    p_template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)
    restored, restored_params, step = checkpoints.restore(
        mngr, train_state_template=template, params_template=p_template
    )
    assert step == 1
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(train_state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(restored_params["dense"]["bias"]), 1.0)
    assert checkpoints.restore_norm_stats(run / "1")["state"].allclose(stats)


def test_existing_dir_needs_resume_or_overwrite(tmp_path):
    run = tmp_path / "exp"
    mngr, _ = checkpoints.initialize_checkpoint_dir(run, keep_period=None, overwrite=False, resume=False)
    params, train_state = _state()
    checkpoints.save(mngr, 3, params=params, train_state=train_state)
    mngr.wait_until_finished()
    with pytest.raises(errors.CheckpointError, match="--resume"):
        checkpoints.initialize_checkpoint_dir(run, keep_period=None, overwrite=False, resume=False)
    mngr, resuming = checkpoints.initialize_checkpoint_dir(run, keep_period=None, overwrite=False, resume=True)
    assert resuming and mngr.latest_step() == 3
    checkpoints.write_wandb_id(run, "abc")
    assert checkpoints.read_wandb_id(run) == "abc"
    mngr, resuming = checkpoints.initialize_checkpoint_dir(run, keep_period=None, overwrite=True, resume=False)
    assert not resuming and mngr.latest_step() is None and not (run / "3").exists()


def test_keep_period_keeps_multiples(tmp_path):
    mngr, _ = checkpoints.initialize_checkpoint_dir(tmp_path / "r", keep_period=2, overwrite=False, resume=False)
    params, train_state = _state()
    for step in range(1, 6):
        checkpoints.save(mngr, step, params=params, train_state=train_state)
        mngr.wait_until_finished()
    assert sorted(mngr.all_steps()) == [2, 4, 5]
