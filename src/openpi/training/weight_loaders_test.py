import logging

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from openpi.models import params_io
from openpi.shared import errors
from openpi.shared import testing
from openpi.training import weight_loaders

BF16 = np.dtype(ml_dtypes.bfloat16)

BASE = {
    "PaliGemma": {
        "llm": {
            "embedder": {"input_embedding": (11, 8)},
            "layers": {"attn": {"q_einsum": {"w": (2, 4, 8, 2)}}, "mlp": {"linear": (2, 16, 8)}},
        },
        "img": {"head": {"kernel": (6, 8), "bias": (8,)}},
    },
    "action_in_proj": {"kernel": (5, 8), "bias": (8,)},
}
LORA = {"lora_a": (2, 4, 8, 1), "lora_b": (2, 4, 1, 2)}


def model_params(*, lora: bool, seed: int = 0, dtype=np.float32) -> dict:
    """A model's fresh parameters: the base tree, with LoRA adapters beside the einsum when `lora`."""
    params = testing.random_params(BASE, seed=seed, dtype=dtype)
    if lora:
        params["PaliGemma"]["llm"]["layers"]["attn"]["q_einsum"].update(testing.random_params(LORA, seed=seed + 1))
    return params


def shapes_of(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


@pytest.fixture
def base_checkpoint(tmp_path):
    params = model_params(lora=False, seed=10)
    params["state_proj"] = {"kernel": np.ones((3, 8), np.float32)}  # a pi0 leaf the pi0.5 model lacks
    return testing.write_openpi_params_checkpoint(tmp_path / "base" / "params", params, nnx_state=True), params


def test_protocol_and_noop(caplog):
    params = model_params(lora=False)
    for loader in (
        weight_loaders.NoOpWeightLoader(),
        weight_loaders.CheckpointWeightLoader("x"),
        weight_loaders.PaliGemmaWeightLoader(),
    ):
        assert isinstance(loader, weight_loaders.WeightLoader)
    with caplog.at_level(logging.WARNING):
        assert weight_loaders.NoOpWeightLoader().load(params) is params
    assert "from scratch" in caplog.text


def test_checkpoint_into_lora_model_keeps_fresh_lora_and_casts(base_checkpoint):
    path, stored = base_checkpoint
    fresh = model_params(lora=True, seed=0)
    fresh["PaliGemma"]["llm"]["layers"]["mlp"]["linear"] = fresh["PaliGemma"]["llm"]["layers"]["mlp"]["linear"].astype(
        ml_dtypes.bfloat16
    )
    loaded = weight_loaders.CheckpointWeightLoader(str(path)).load(fresh)
    params_io.check_tree_matches(shapes_of(fresh), loaded)
    assert "state_proj" not in loaded
    q = loaded["PaliGemma"]["llm"]["layers"]["attn"]["q_einsum"]
    np.testing.assert_array_equal(q["w"], stored["PaliGemma"]["llm"]["layers"]["attn"]["q_einsum"]["w"])
    assert q["lora_a"] is fresh["PaliGemma"]["llm"]["layers"]["attn"]["q_einsum"]["lora_a"]
    linear = loaded["PaliGemma"]["llm"]["layers"]["mlp"]["linear"]
    assert linear.dtype == BF16
    np.testing.assert_array_equal(
        linear, stored["PaliGemma"]["llm"]["layers"]["mlp"]["linear"].astype(ml_dtypes.bfloat16)
    )


def test_checkpoint_into_shapes_only(base_checkpoint):
    path, _ = base_checkpoint
    expected = shapes_of(model_params(lora=True))
    loaded = weight_loaders.CheckpointWeightLoader(str(path)).load(expected)
    q = loaded["PaliGemma"]["llm"]["layers"]["attn"]["q_einsum"]
    assert isinstance(q["w"], np.ndarray)
    assert isinstance(q["lora_b"], jax.ShapeDtypeStruct)  # left for the trainer to initialise


def test_missing_non_lora_weight_is_an_error(tmp_path):
    stored = model_params(lora=False)
    del stored["action_in_proj"]["bias"]
    path = testing.write_openpi_params_checkpoint(tmp_path / "params", stored)
    with pytest.raises(errors.CheckpointError, match=r"'action_in_proj/bias' is missing from the checkpoint"):
        weight_loaders.CheckpointWeightLoader(str(path)).load(model_params(lora=True))


def test_shape_mismatch_names_the_path(tmp_path):
    stored = model_params(lora=False)
    stored["action_in_proj"]["kernel"] = np.zeros((7, 8), np.float32)  # e.g. a different action_dim
    path = testing.write_openpi_params_checkpoint(tmp_path / "params", stored)
    with pytest.raises(errors.CheckpointError, match=r"'action_in_proj/kernel' has shape \(7, 8\)"):
        weight_loaders.CheckpointWeightLoader(str(path)).load(model_params(lora=False))


def test_missing_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    with pytest.raises(errors.CheckpointError, match="gsutil cp -r gs://openpi-assets"):
        weight_loaders.CheckpointWeightLoader("gs://openpi-assets/checkpoints/pi05_base/params").load({})


def test_paligemma_npz_fills_only_paligemma(tmp_path):
    fresh = model_params(lora=False, seed=0)
    vlm = testing.random_params({"llm": BASE["PaliGemma"]["llm"], "img": BASE["PaliGemma"]["img"]}, seed=5)
    vlm["img"]["extra_head_not_in_model"] = np.zeros((2,), np.float32)
    path = testing.write_paligemma_npz(tmp_path / "pt_224.npz", vlm)
    loaded = weight_loaders.PaliGemmaWeightLoader(str(path)).load(fresh)
    params_io.check_tree_matches(shapes_of(fresh), loaded)
    np.testing.assert_array_equal(loaded["PaliGemma"]["img"]["head"]["kernel"], vlm["img"]["head"]["kernel"])
    assert loaded["action_in_proj"]["kernel"] is fresh["action_in_proj"]["kernel"]


def test_paligemma_npz_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    with pytest.raises(errors.CheckpointError, match=r"vertex-model-garden-paligemma-us/paligemma/pt_224\.npz"):
        weight_loaders.PaliGemmaWeightLoader().load({})
    np.savez(tmp_path / "flat.npz", **{"llm/w": np.zeros(2)})
    with pytest.raises(errors.CheckpointError, match="does not start with 'params/'"):
        weight_loaders.PaliGemmaWeightLoader(str(tmp_path / "flat.npz")).load({})
    np.save(tmp_path / "one.npy", np.zeros(2))
    with pytest.raises(errors.CheckpointError, match="single array"):
        weight_loaders.PaliGemmaWeightLoader(str(tmp_path / "one.npy")).load({})
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(errors.CheckpointError, match="Cannot read"):
        weight_loaders.PaliGemmaWeightLoader(str(tmp_path / "broken.npz")).load({})


def test_base_checkpoint_into_dummy_pi06_lora_model(tmp_path):
    """An openpi-layout checkpoint of the dummy pi0.5 model loads into its LoRA pi0.6 twin."""
    pi0_config = pytest.importorskip("openpi.models.pi0_config")
    base = pi0_config.Pi0Config(pi05=True, paligemma_variant="dummy", action_expert_variant="dummy")
    lora = pi0_config.Pi0Config(
        pi05=True, pistar=True, paligemma_variant="dummy_lora", action_expert_variant="dummy_lora"
    )
    base_shapes, lora_shapes = base.params_shape(), lora.params_shape()
    rng = np.random.default_rng(0)
    stored = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), base_shapes)
    path = testing.write_openpi_params_checkpoint(tmp_path / "params", stored, nnx_state=True)

    params_io.check_tree_matches(base_shapes, params_io.restore_params(path))
    loaded = weight_loaders.CheckpointWeightLoader(str(path)).load(lora_shapes)
    params_io.check_tree_matches(lora_shapes, loaded)
    flat = params_io.flatten(loaded)
    fresh = [k for k, v in flat.items() if isinstance(v, jax.ShapeDtypeStruct)]
    assert fresh and all("lora" in k for k in fresh)
    embedding = "PaliGemma/llm/embedder/input_embedding"
    np.testing.assert_array_equal(flat[embedding], params_io.flatten(stored)[embedding])
    assert jnp.dtype(flat[embedding].dtype) == jnp.dtype(params_io.flatten(lora_shapes)[embedding].dtype)


def test_validate_fails_fast_without_reading_weights(tmp_path, base_checkpoint):
    path, _ = base_checkpoint
    weight_loaders.validate(weight_loaders.CheckpointWeightLoader(str(path)))
    weight_loaders.validate(weight_loaders.NoOpWeightLoader())
    with pytest.raises(errors.CheckpointError, match=r"pass .*params instead"):
        weight_loaders.validate(weight_loaders.CheckpointWeightLoader(str(path.parent)))
    npz = testing.write_paligemma_npz(tmp_path / "pt_224.npz", {"llm": {"w": np.zeros(2)}})
    weight_loaders.validate(weight_loaders.PaliGemmaWeightLoader(str(npz)))
    (tmp_path / "bad.npz").write_bytes(b"partial download")
    with pytest.raises(errors.CheckpointError, match=r"not an \.npz archive"):
        weight_loaders.validate(weight_loaders.PaliGemmaWeightLoader(str(tmp_path / "bad.npz")))
