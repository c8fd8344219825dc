import jax
import numpy as np
import pytest

from openpi.models import siglip
from openpi.shared import errors


def test_tiny_variant_tokens_and_tree():
    module = siglip.Module(num_classes=64, variant="mu/32")
    images = jax.random.uniform(jax.random.key(0), (2, 224, 224, 3), minval=-1, maxval=1)
    params = jax.jit(module.init)(jax.random.key(1), images)["params"]
    assert params["pos_embedding"].shape == (1, 49, 32)
    assert params["Transformer"]["encoderblock"]["MultiHeadDotProductAttention_0"]["query"]["kernel"].shape == (
        1,
        32,
        2,
        16,
    )
    apply = jax.jit(module.apply)
    out = apply({"params": params}, images)
    assert out.shape == (2, 49, 64)
    np.testing.assert_array_equal(out, 0.0)  # zero-initialised head, as openpi
    params["head"]["kernel"] = jax.random.normal(jax.random.key(2), params["head"]["kernel"].shape)
    out = apply({"params": params}, images)
    assert np.abs(np.asarray(out)).max() > 0
    assert siglip.num_tokens("mu/32", (224, 224)) == 49
    assert siglip.num_tokens("So400m/14", (224, 224)) == 256


def test_so400m_shapes_without_allocation():
    module = siglip.Module(num_classes=2048, variant="So400m/14", dtype_mm="bfloat16")
    shapes = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32))
    p = shapes["params"]
    assert p["embedding"]["kernel"].shape == (14, 14, 3, 1152)
    assert p["pos_embedding"].shape == (1, 256, 1152)
    block = p["Transformer"]["encoderblock"]
    assert block["MlpBlock_0"]["Dense_0"]["kernel"].shape == (27, 1152, 4304)
    assert block["MultiHeadDotProductAttention_0"]["out"]["kernel"].shape == (27, 16, 72, 1152)
    assert p["head"]["kernel"].shape == (1152, 2048)


def test_unknown_variant():
    with pytest.raises(errors.ConfigError, match="So400m/14"):
        siglip.get_config("So400m")
    with pytest.raises(errors.ConfigError):
        siglip.get_config("XL/14")


def test_sincos2d_position_embedding_has_no_parameter_and_encodes_row_and_column():
    table = siglip.posemb_sincos_2d(4, 4, 32)
    assert table.shape == (1, 16, 32)
    # Every patch gets its own code, and the column code (first half) is shared along a column.
    assert len({tuple(np.round(row, 6)) for row in table[0]}) == 16
    grid = table[0].reshape(4, 4, 32)
    np.testing.assert_allclose(grid[0, :, :16], grid[3, :, :16])
    np.testing.assert_allclose(grid[:, 0, 16:], grid[:, 3, 16:])
    module = siglip.Module(num_classes=64, variant="mu/8", posemb="sincos2d")
    images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
    params = jax.jit(module.init)(jax.random.key(1), images)["params"]
    assert "pos_embedding" not in params
    learned = jax.jit(siglip.Module(num_classes=64, variant="mu/8").init)(jax.random.key(1), images)["params"]
    assert set(learned) - set(params) == {"pos_embedding"}
    with pytest.raises(errors.ConfigError, match="divisible by 4"):
        siglip.posemb_sincos_2d(2, 2, 30)
    with pytest.raises(errors.ConfigError, match="position embedding"):
        siglip.Module(num_classes=64, variant="mu/8", posemb="rope").init(jax.random.key(1), images)
