import logging

from absl import logging as absl_logging
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest

from openpi.models import params_io
from openpi.shared import errors
from openpi.shared import testing

SHAPES = {
    "PaliGemma": {
        "llm": {
            "embedder": {"input_embedding": (11, 8)},
            "layers": {"attn": {"q_einsum": {"w": (2, 4, 8, 2)}}},
            "final_norm": {"scale": (8,)},
        },
        "img": {"head": {"kernel": (6, 8), "bias": (8,)}},
    },
    "action_in_proj": {"kernel": (5, 8), "bias": (8,)},
}


@pytest.fixture(scope="module")
def params():
    p = testing.random_params(SHAPES, seed=1)
    p["PaliGemma"]["llm"]["final_norm"]["scale"] = p["PaliGemma"]["llm"]["final_norm"]["scale"].astype(
        ml_dtypes.bfloat16
    )
    return p


def assert_trees_equal(a, b):
    fa, fb = params_io.flatten(a), params_io.flatten(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        assert np.asarray(fa[k]).dtype == np.asarray(fb[k]).dtype, k
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


def test_save_then_restore_round_trips(tmp_path, params):
    path = params_io.save_params(tmp_path / "ckpt" / "params", params)
    restored = params_io.restore_params(path)
    assert isinstance(restored["action_in_proj"]["kernel"], np.ndarray)
    assert_trees_equal(restored, params)
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["params"]  # no temp dirs left behind


@pytest.mark.parametrize("nnx_state", [False, True])
def test_openpi_layout_written_with_raw_orbax_restores(tmp_path, params, nnx_state):
    path = testing.write_openpi_params_checkpoint(tmp_path / "params", params, nnx_state=nnx_state)
    assert_trees_equal(params_io.restore_params(path), params)
    # Our writer produces the same Orbax metadata tree as the raw openpi calls.
    ours = params_io.save_params(tmp_path / "ours", params)
    with ocp.PyTreeCheckpointer() as ckptr:
        ref_tree = params_io._tree_metadata(ckptr.metadata(path))
        our_tree = params_io._tree_metadata(ckptr.metadata(ours))
    assert list(our_tree) == list(ref_tree) == ["params"]
    if nnx_state:
        assert list(ref_tree["params"]["action_in_proj"]["kernel"]) == ["value"]
    else:
        assert jax.tree.structure(our_tree) == jax.tree.structure(ref_tree)


def test_restore_casts_and_places(tmp_path, params):
    path = params_io.save_params(tmp_path / "params", params)
    as_bf16 = params_io.restore_params(path, dtype=jnp.bfloat16)
    assert {np.dtype(v.dtype) for v in params_io.flatten(as_bf16).values()} == {np.dtype(ml_dtypes.bfloat16)}
    on_device = params_io.restore_params(path, restore_type=jax.Array)
    leaf = on_device["PaliGemma"]["img"]["head"]["kernel"]
    assert isinstance(leaf, jax.Array) and leaf.sharding.is_fully_replicated
    np.testing.assert_array_equal(np.asarray(leaf), params["PaliGemma"]["img"]["head"]["kernel"])


def test_restore_from_the_openpi_cache(tmp_path, monkeypatch, params):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    url = "gs://openpi-assets/checkpoints/pi05_base/params"
    with pytest.raises(errors.CheckpointError, match="not in the local cache"):
        params_io.restore_params(url)
    testing.write_openpi_params_checkpoint(tmp_path / "openpi-assets/checkpoints/pi05_base/params", params)
    assert_trees_equal(params_io.restore_params(url), params)


def test_bad_locations_are_clear_errors(tmp_path, params):
    with pytest.raises(errors.CheckpointError, match="does not exist"):
        params_io.restore_params(tmp_path / "missing")
    (tmp_path / "file.npz").write_bytes(b"x")
    with pytest.raises(errors.CheckpointError, match="is a file"):
        params_io.restore_params(tmp_path / "file.npz")
    step = tmp_path / "1000"
    params_io.save_params(step / "params", params)
    with pytest.raises(errors.CheckpointError, match=r"pass .*1000/params instead"):
        params_io.restore_params(step)
    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save((tmp_path / "train_state").absolute(), {"step": np.asarray(3)})
    with pytest.raises(errors.CheckpointError, match="no top-level 'params' item"):
        params_io.restore_params(tmp_path / "train_state")


def test_save_refuses_to_clobber_unless_asked(tmp_path, params):
    path = params_io.save_params(tmp_path / "params", params)
    with pytest.raises(errors.CheckpointError, match="already exists"):
        params_io.save_params(path, params)
    other = testing.random_params(SHAPES, seed=2)
    params_io.save_params(path, other, overwrite=True)
    assert_trees_equal(params_io.restore_params(path), other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params"]
    with pytest.raises(errors.CheckpointError, match="non-empty nested dict"):
        params_io.save_params(tmp_path / "empty", {})


def test_mismatch_names_the_first_differing_path(params):
    expected = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    params_io.check_tree_matches(expected, params)

    missing = params_io.unflatten({k: v for k, v in params_io.flatten(params).items() if "img/head/bias" not in k})
    with pytest.raises(errors.CheckpointError, match=r"'PaliGemma/img/head/bias' is missing from the checkpoint"):
        params_io.check_tree_matches(expected, missing)

    extra = params_io.unflatten({**params_io.flatten(params), "PaliGemma/llm/zzz": np.zeros(1)})
    with pytest.raises(errors.CheckpointError, match=r"'PaliGemma/llm/zzz' is in the checkpoint but not in the model"):
        params_io.check_tree_matches(expected, extra)

    bad = params_io.flatten(params)
    bad["action_in_proj/kernel"] = np.zeros((7, 8), np.float32)
    bad["PaliGemma/img/head/bias"] = np.zeros((8,), np.float16)
    with pytest.raises(errors.CheckpointError) as e:
        params_io.check_tree_matches(expected, params_io.unflatten(bad))
    msg = str(e.value)
    assert "'PaliGemma/img/head/bias' has dtype float16" in msg and "1 other paths differ" in msg
    params_io.check_tree_matches(
        expected,
        params_io.unflatten({**bad, "action_in_proj/kernel": params["action_in_proj"]["kernel"]}),
        check_dtypes=False,
    )
    with pytest.raises(errors.CheckpointError, match=r"'action_in_proj/kernel' has shape \(7, 8\)"):
        params_io.check_tree_matches(expected, params_io.unflatten(bad), check_dtypes=False)


def test_save_params_restores_into_the_dummy_pi0_model(tmp_path):
    pi0_config = pytest.importorskip("openpi.models.pi0_config")
    shapes = pi0_config.Pi0Config(paligemma_variant="dummy", action_expert_variant="dummy").params_shape()
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)
    restored = params_io.restore_params(params_io.save_params(tmp_path / "params", params))
    params_io.check_tree_matches(shapes, restored)
    assert_trees_equal(restored, params)
    del restored["PaliGemma"]["llm"]["final_norm_1"]
    with pytest.raises(errors.CheckpointError, match=r"'PaliGemma/llm/final_norm_1/scale' is missing"):
        params_io.check_tree_matches(shapes, restored)


def test_loading_a_training_step_logs_no_missing_metadata_warning(tmp_path, params, caplog):
    """Issue 31.3: a step's params/ written by Orbax's CheckpointManager (openpi's trainer, ours) has no
    _CHECKPOINT_METADATA of its own; loading it must not warn about that on every load."""
    with ocp.CheckpointManager(tmp_path / "run", item_names=(params_io.PARAMS_ITEM,)) as mngr:
        mngr.save(7, args=ocp.args.Composite(params=ocp.args.PyTreeSave({params_io.PARAMS_ITEM: params})))
    path = tmp_path / "run" / "7" / params_io.PARAMS_ITEM
    assert not (path / "_CHECKPOINT_METADATA").exists()
    with caplog.at_level(logging.INFO):
        assert_trees_equal(params_io.restore_params(path), params)
    assert not [r for r in caplog.records if "Metadata file does not exist" in r.getMessage()]
    # Only that message is dropped: absl's other warnings still reach the handlers.
    with caplog.at_level(logging.INFO):
        absl_logging.warning("Metadata file does not exist: %s", tmp_path / "elsewhere.json")
    assert [r for r in caplog.records if "elsewhere.json" in r.getMessage()]
