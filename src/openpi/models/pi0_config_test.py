"""Pi0Config defaults, the full-size parameter trees (no allocation) against openpi's, and the LoRA freeze rule."""

import pathlib

import jax
import numpy as np
import pytest

from openpi.models import pi0_config
from openpi.shared import errors

_TREES = pathlib.Path(__file__).parent / "testdata"

PI05 = pi0_config.Pi0Config(pi05=True)
PI0 = pi0_config.Pi0Config()
PI05_LORA = pi0_config.Pi0Config(pi05=True, paligemma_variant="gemma_2b_lora", action_expert_variant="gemma_300m_lora")


def _tree_lines(params) -> list[tuple[str, str, str]]:
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return sorted((pi0_config.path_str(p), str(list(x.shape)), str(x.dtype)) for p, x in leaves)


def _expected(name: str) -> list[list[str]]:
    return [line.split("\t") for line in (_TREES / f"{name}.tsv").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("config", "tree", "count"),
    [(PI05, "pi05_full", 3_353_433_872), (PI0, "pi0_full", 3_238_048_528), (PI05_LORA, "pi05_lora_full", None)],
    ids=["pi05", "pi0", "pi05_lora"],
)
def test_full_size_param_tree_matches_openpi(config, tree, count):
    shapes = config.params_shape()  # jax.eval_shape: no 13 GB allocation
    got = _tree_lines(shapes)
    expected = _expected(tree)
    assert [g[0] for g in got] == sorted(e[0] for e in expected)
    by_path = {g[0]: g for g in got}
    for line in expected:
        if len(line) == 3:  # the LoRA list carries paths only
            assert by_path[line[0]] == tuple(line), line[0]
    if count is not None:
        assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == count


def test_lora_adapter_shapes():
    shapes = PI05_LORA.params_shape()["PaliGemma"]["llm"]["layers"]
    assert shapes["attn"]["q_einsum"]["lora_a"].shape == (18, 8, 2048, 16)
    assert shapes["attn"]["q_einsum"]["lora_b"].shape == (18, 8, 16, 256)
    assert shapes["attn"]["kv_einsum_1"]["lora_a"].shape == (18, 2, 1, 1024, 32)
    assert shapes["attn"]["attn_vec_einsum"]["lora_a"].shape == (18, 8, 256, 16)
    assert shapes["mlp"]["gating_einsum_lora_b"].shape == (18, 2, 16, 16384)
    assert shapes["mlp_1"]["linear_lora_a"].shape == (18, 4096, 32)


def test_defaults():
    assert (PI0.dtype, PI0.action_dim, PI0.action_horizon, PI0.max_token_len) == ("bfloat16", 32, 50, 48)
    assert (PI0.paligemma_variant, PI0.action_expert_variant, PI0.siglip_variant) == (
        "gemma_2b",
        "gemma_300m",
        "So400m/14",
    )
    assert PI0.discrete_state_input is False
    assert PI05.max_token_len == 200 and PI05.discrete_state_input is True
    pistar = pi0_config.Pi0Config(pi05=True, pistar=True)
    assert pistar.max_token_len == 203 and pistar.model_type == "pi06"
    pi0_recap = pi0_config.Pi0Config(pistar=True)
    assert pi0_recap.max_token_len == 51 and pi0_recap.model_type == "pi0_recap"
    assert pi0_recap.discrete_state_input is False
    assert pi0_config.Pi0Config(pi05=True, max_token_len=64).max_token_len == 64
    dummy = pi0_config.Pi0Config(paligemma_variant="dummy", action_expert_variant="dummy")
    assert dummy.siglip_variant == pi0_config.TINY_SIGLIP
    assert pi0_config.Pi0Config(paligemma_variant="dummy", siglip_variant="So400m/14").siglip_variant == "So400m/14"


def test_bad_configs_raise_config_errors():
    with pytest.raises(errors.ConfigError, match="gemma_7b"):
        pi0_config.Pi0Config(paligemma_variant="gemma_7b")
    with pytest.raises(errors.ConfigError, match="SigLIP"):
        pi0_config.Pi0Config(siglip_variant="huge")
    with pytest.raises(errors.ConfigError, match="siglip_posemb"):
        pi0_config.Pi0Config(siglip_posemb="learned")


def test_inputs_spec_and_fakes():
    cfg = pi0_config.Pi0Config(pi05=True, pistar=True)
    obs, act = cfg.inputs_spec(batch_size=3)
    assert obs.images["left_wrist_0_rgb"].shape == (3, 224, 224, 3)
    assert obs.tokenized_prompt.shape == (3, 203)
    assert act.shape == (3, 50, 32)
    assert cfg.fake_act(2).shape == (2, 50, 32)


def _trainable_paths(config) -> set[str]:
    mask = config.trainable_mask(config.params_shape())
    return {pi0_config.path_str(p) for p, x in jax.tree_util.tree_flatten_with_path(mask)[0] if x}


def test_freeze_filter_both_lora_leaves_lora_img_and_projections():
    trainable = _trainable_paths(PI05_LORA)
    llm = {p for p in trainable if "/llm/" in p}
    assert llm and all("lora" in p for p in llm)
    assert "PaliGemma/img/embedding/kernel" in trainable  # openpi does not freeze the vision tower
    assert {"action_in_proj/kernel", "time_mlp_in/kernel", "action_out_proj/bias"} <= trainable
    assert "PaliGemma/llm/embedder/input_embedding" not in trainable
    assert "PaliGemma/llm/final_norm_1/Dense_0/kernel" not in trainable


def test_freeze_filter_paligemma_lora_only_keeps_action_expert():
    cfg = pi0_config.Pi0Config(pi05=True, paligemma_variant="gemma_2b_lora")
    trainable = _trainable_paths(cfg)
    assert "PaliGemma/llm/layers/attn/q_einsum_1/w" in trainable
    assert "PaliGemma/llm/layers/mlp_1/linear" in trainable
    assert "PaliGemma/llm/layers/attn/q_einsum/w" not in trainable
    assert "PaliGemma/llm/layers/attn/q_einsum/lora_a" in trainable
    assert "PaliGemma/llm/embedder/input_embedding" not in trainable


def test_freeze_filter_action_expert_lora_only_and_none():
    cfg = pi0_config.Pi0Config(pi05=True, action_expert_variant="gemma_300m_lora")
    trainable = _trainable_paths(cfg)
    assert "PaliGemma/llm/layers/attn/q_einsum/w" in trainable
    assert "PaliGemma/llm/embedder/input_embedding" in trainable
    assert "PaliGemma/llm/layers/attn/q_einsum_1/w" not in trainable
    assert "PaliGemma/llm/layers/attn/q_einsum_1/lora_b" in trainable
    assert not PI05.get_freeze_filter().freeze
    assert all(jax.tree.leaves(PI05.trainable_mask(PI05.params_shape())))


def test_pistar_changes_only_the_prompt_budget():
    kw = {"pi05": True, "paligemma_variant": "dummy", "action_expert_variant": "dummy", "max_token_len": 16}
    pi05 = jax.tree.map(lambda x: (x.shape, x.dtype), pi0_config.Pi0Config(**kw).params_shape())
    pi06 = jax.tree.map(lambda x: (x.shape, x.dtype), pi0_config.Pi0Config(pistar=True, **kw).params_shape())
    assert pi05 == pi06
    kw["pi05"] = False
    pi0 = jax.tree.map(lambda x: (x.shape, x.dtype), pi0_config.Pi0Config(**kw).params_shape())
    pi0_recap = jax.tree.map(lambda x: (x.shape, x.dtype), pi0_config.Pi0Config(pistar=True, **kw).params_shape())
    assert pi0 == pi0_recap and pi0 != pi05
