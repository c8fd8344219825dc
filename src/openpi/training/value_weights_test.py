import io

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from openpi.models import params_io
from openpi.models import siglip
from openpi.models import value_model as vm
from openpi.shared import errors
from openpi.shared import testing
from openpi.training import value_weights

CFG = vm.ValueModelConfig(
    siglip_variant="mu/32",
    gemma3_variant="dummy",
    image_resolution=(64, 64),
    max_token_len=8,
    dtype="float32",
    cameras=("base_0_rgb",),
)


@pytest.fixture(scope="module")
def fresh():
    return jax.tree.map(np.asarray, CFG.init(jax.random.key(0)))


def _random_like(tree, seed):
    leaves, treedef = jax.tree.flatten(tree)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [rng.standard_normal(x.shape).astype(np.float32) for x in leaves])


def _released_gemma3_flat(llm):
    """The released Gemma3 layout: {'transformer/<module path>': {param: array}}, mlp weights under 'w'."""
    out = {}
    for path, leaf in params_io.flatten(llm).items():
        *module, name = path.split("/")
        if module and module[-1] == "mlp":
            module, name = [*module, name], "w"
        out.setdefault("/".join(["transformer", *module]), {})[name] = np.asarray(leaf)
    return out


def _write_npz(path, flat):
    buf = io.BytesIO()
    np.savez(buf, **flat)
    path.write_bytes(buf.getvalue())
    return path


def test_load_from_openpi_params_and_gemma3_release(tmp_path, fresh):
    source_img = _random_like(fresh["img"], 1)
    # pi05_base's SigLIP head projects to PaliGemma's 2048 width: a different shape, which must be ignored.
    source_img["head"] = {"kernel": np.ones((32, 48), np.float32), "bias": np.ones((48,), np.float32)}
    testing.write_openpi_params_checkpoint(
        tmp_path / "pi05_base" / "params",
        {
            "PaliGemma": {"img": source_img, "llm": {"x": np.zeros(3, np.float32)}},
            "action_in_proj": {"kernel": np.zeros((2, 2))},
        },
    )
    source_llm = _random_like(fresh["llm"], 2)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "gemma3-270m-pt", _released_gemma3_flat(source_llm))

    loader = value_weights.ValueWeightLoader(
        siglip_path=str(tmp_path / "pi05_base" / "params"), gemma3_path=str(tmp_path / "gemma3-270m-pt")
    )
    loader.validate()
    loaded = loader.load(fresh)
    params_io.check_tree_matches(fresh, loaded)
    for key in ("embedding", "pos_embedding", "Transformer"):
        jax.tree.map(np.testing.assert_array_equal, loaded["img"][key], source_img[key])
    jax.tree.map(np.testing.assert_array_equal, loaded["img"]["head"], fresh["img"]["head"])
    jax.tree.map(np.testing.assert_array_equal, loaded["llm"], source_llm)
    jax.tree.map(np.testing.assert_array_equal, loaded["value_head"], fresh["value_head"])
    # The model runs on the loaded weights.
    out = jax.jit(CFG.module().apply)({"params": loaded}, CFG.fake_obs(2))
    assert out.shape == (2, 201) and np.all(np.isfinite(out))


@pytest.mark.parametrize("scanned", [True, False])
def test_load_siglip_from_big_vision_npz(tmp_path, fresh, scanned):
    source = _random_like(fresh["img"], 3)
    # mu has one block; write a 3-block tower so that stacking order is tested.
    depth = 3
    blocks = [
        _random_like(jax.tree.map(lambda x: x[0], source["Transformer"]["encoderblock"]), 10 + i) for i in range(depth)
    ]
    flat = {}
    for path, leaf in params_io.flatten({k: v for k, v in source.items() if k != "Transformer"}).items():
        flat[f"params/img/{path}"] = leaf
    flat["params/img/Transformer/encoder_norm/scale"] = source["Transformer"]["encoder_norm"]["scale"]
    flat["params/img/Transformer/encoder_norm/bias"] = source["Transformer"]["encoder_norm"]["bias"]
    if scanned:
        for leaf_path in params_io.flatten(blocks[0]):
            stacked = np.stack([params_io.flatten(b)[leaf_path] for b in blocks])
            flat[f"params/img/Transformer/encoderblock/{leaf_path}"] = stacked
    else:
        for i, block in enumerate(blocks):
            for leaf_path, leaf in params_io.flatten(block).items():
                flat[f"params/img/Transformer/encoderblock_{i}/{leaf_path}"] = leaf
    # SigLIP two-tower extras that the value model does not use.
    flat["params/img/MAPHead_0/probe"] = np.zeros((1, 1, 32), np.float32)
    flat["params/txt/Embed_0/embedding"] = np.zeros((5, 32), np.float32)
    flat["params/t"] = np.zeros((1,), np.float32)
    path = _write_npz(tmp_path / "siglip.npz", flat)

    img = value_weights.load_siglip_params(path)
    q = img["Transformer"]["encoderblock"]["MultiHeadDotProductAttention_0"]["query"]["kernel"]
    assert q.shape[0] == depth
    for i in range(depth):
        np.testing.assert_array_equal(q[i], blocks[i]["MultiHeadDotProductAttention_0"]["query"]["kernel"])
    assert "MAPHead_0" not in img

    # A 3-block file does not fit the 1-block "mu" model: the error names the offending parameter.
    with pytest.raises(errors.CheckpointError, match="encoderblock"):
        value_weights.ValueWeightLoader(siglip_path=str(path)).load(fresh)

    # Keep only the first block: now it loads, everything but the fresh head comes from the file.
    one = {}
    for k, v in flat.items():
        if "encoderblock_1/" in k or "encoderblock_2/" in k:
            continue
        one[k] = v[:1] if "encoderblock/" in k else v
    loaded = value_weights.ValueWeightLoader(siglip_path=str(_write_npz(tmp_path / "one.npz", one))).load(fresh)
    np.testing.assert_array_equal(
        loaded["img"]["Transformer"]["encoderblock"]["MlpBlock_0"]["Dense_0"]["kernel"][0],
        blocks[0]["MlpBlock_0"]["Dense_0"]["kernel"],
    )
    np.testing.assert_array_equal(loaded["img"]["pos_embedding"], source["pos_embedding"])
    jax.tree.map(np.testing.assert_array_equal, loaded["img"]["head"], fresh["img"]["head"])


def test_missing_files_name_flag_and_env(tmp_path, fresh):
    loader = value_weights.ValueWeightLoader(siglip_path=str(tmp_path / "nope"), gemma3_path=None)
    with pytest.raises(errors.CheckpointError, match=r"--siglip-path or \$OPENPI_VALUE_SIGLIP_PATH"):
        loader.validate()
    loader = value_weights.ValueWeightLoader(siglip_path=None, gemma3_path="gs://gemma-data/checkpoints/none")
    with pytest.raises(errors.CheckpointError, match=r"Gemma3 weights not found.*OPENPI_VALUE_GEMMA3_PATH"):
        loader.load(fresh)
    bad = _write_npz(tmp_path / "bad.npz", {"params/llm/x": np.zeros(2)})
    with pytest.raises(errors.CheckpointError, match="no image tower"):
        value_weights.ValueWeightLoader(siglip_path=str(bad)).load(fresh)
    # No paths: nothing loaded, the fresh tree comes back.
    same = value_weights.ValueWeightLoader().load(fresh)
    jax.tree.map(np.testing.assert_array_equal, same, fresh)


def test_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv(value_weights.SIGLIP_ENV, "/x/siglip.npz")
    monkeypatch.delenv(value_weights.GEMMA3_ENV, raising=False)
    loader = value_weights.ValueWeightLoader.from_env(gemma3_path="/y/g3")
    assert loader.siglip_path == "/x/siglip.npz" and loader.gemma3_path == "/y/g3"
    assert value_weights.ValueWeightLoader.from_env().gemma3_path == value_weights.DEFAULT_GEMMA3_PATH
    assert siglip.get_config("mu/32").depth == 1 and jnp.dtype(CFG.dtype) == jnp.float32


def test_sim_value_model_starts_from_the_policy_siglip(tmp_path):
    """Issue 27.1: in the sim loop the BC policy plays pi05_base. Its trainer checkpoint (`<step>/params`, written by
    the policy trainer's own checkpoint code) lends `PaliGemma/img` to `value_sim` through the loader a YAM user
    gets with pi05_base; the projection into Gemma3, Gemma3 and the value head stay fresh (no Gemma3 is loaded)."""
    import dataclasses

    from openpi.training import checkpoints
    from openpi.training import config as _config
    from openpi.training import value_config
    from openpi.training import value_train

    policy = _config.get_config("sim_pi05").model
    policy_params = jax.tree.map(np.asarray, jax.jit(policy.init_params)(jax.random.key(7)))
    mngr, _ = checkpoints.initialize_checkpoint_dir(tmp_path / "bc", keep_period=None, overwrite=False, resume=False)
    checkpoints.save(mngr, 1499, params=policy_params, train_state={"step": np.int32(1500)})
    mngr.wait_until_finished()

    config = dataclasses.replace(value_config.get_config("value_sim"), siglip_path=str(tmp_path / "bc/1499/params"))
    assert config.load_pretrained and config.pretrained_backbones == ("siglip",)
    loader = value_train.weight_loader(config)
    assert loader.gemma3_path is None
    loader.validate()
    fresh = jax.tree.map(np.asarray, config.model.init(jax.random.key(0)))
    loaded = loader.load(fresh)
    params_io.check_tree_matches(fresh, loaded)
    source = params_io.flatten(policy_params["PaliGemma"]["img"])
    got = params_io.flatten(loaded["img"])
    assert set(got) == set(source)  # the same tower, leaf for leaf
    for path, leaf in got.items():
        if path.startswith("head/"):  # the policy's projects into its PaliGemma width; ours into Gemma3's
            np.testing.assert_array_equal(leaf, params_io.flatten(fresh["img"])[path])
        else:
            np.testing.assert_array_equal(leaf, source[path], err_msg=path)
    jax.tree.map(np.testing.assert_array_equal, loaded["llm"], fresh["llm"])
    jax.tree.map(np.testing.assert_array_equal, loaded["value_head"], fresh["value_head"])
    # Without a policy checkpoint the sim config names what to pass (the pi05_base default is not in the cache).
    unset = value_train.weight_loader(value_config.get_config("value_sim"))
    with pytest.raises(errors.CheckpointError, match="--siglip-path"):
        unset.validate()
