import dataclasses

import jax
import pytest

from openpi.models import pi0_config
from openpi.models import tokenizer as _tokenizer
from openpi.shared import errors
from openpi.training import config as _config
from openpi.training import weight_loaders

PI06_YAM = [
    "pi06_yam_vial_30fps",
    "pi06_yam_vial_30fps_lora",
    "pi06_yam_vial_30fps_lora_from_sft",
    "pi06_yam_vial_30fps_lora_from_sft_recap",
    "pi06_yam_vial_30fps_from_sft_recap",
]


def test_every_registered_config_builds_its_params_shape():
    shapes = {}
    for name in _config.config_names():
        model = _config.get_config(name).model
        if model not in shapes:
            shapes[model] = jax.eval_shape(model.init_params, jax.random.key(0))
        assert "PaliGemma" in shapes[model], name
    full = shapes[_config.get_config("pi06_yam_vial_30fps").model]
    n = sum(x.size for x in jax.tree.leaves(full))
    assert n == 3_353_433_872  # openpi's pi0.5


def test_community_pi06_names_and_infer_twins():
    names = set(_config.config_names())
    for name in PI06_YAM:
        train, infer = _config.get_config(name), _config.get_config(f"{name}_infer")
        assert train.resolved_indicator_dropout == 0.3 and infer.resolved_indicator_dropout == 0.0
        assert infer.serving_twin_of == name and train.serving_twin_of is None
        assert dataclasses.replace(infer, name=name, indicator_dropout=None, serving_twin_of=None) == train
        assert train.model.pi05 and train.model.pistar
        assert train.data.use_adv_ind and not train.data.prompt_from_task
    assert {"debug", "debug_pi06", "demo_pi06", "demo_pi06_recap", "pi05_yam_vial_30fps"} <= names
    lora = _config.get_config("pi06_yam_vial_30fps_lora")
    assert lora.batch_size == 4 and lora.ema_decay is None and "lora" in lora.model.paligemma_variant
    assert _config.get_config("pi06_yam_vial_30fps").batch_size == 56
    recap = _config.get_config("pi06_yam_vial_30fps_lora_from_sft_recap")
    assert recap.data.repo_id != lora.data.repo_id
    assert isinstance(recap.weight_loader, weight_loaders.CheckpointWeightLoader)
    for name in names:  # no user's home directory baked into a config
        assert "/home/" not in repr(_config.get_config(name)) and "~" not in repr(_config.get_config(name))


def test_unknown_name_suggests_the_closest():
    with pytest.raises(errors.ConfigError, match="did you mean 'debug_pi06'"):
        _config.get_config("debug_pi6")


def test_cli_name_first_then_overrides():
    cfg = _config.cli(["debug_pi06", "--exp-name=x", "--batch-size=4", "--overwrite", "--data.repo-id=/tmp/ds"])
    assert (cfg.name, cfg.exp_name, cfg.batch_size, cfg.overwrite, cfg.data.repo_id) == (
        "debug_pi06",
        "x",
        4,
        True,
        "/tmp/ds",
    )
    assert cfg.checkpoint_dir.parts[-2:] == ("debug_pi06", "x")
    with pytest.raises(errors.ConfigError, match="Name a training config first"):
        _config.cli(["--exp-name=x"])


def test_lora_freeze_filter_comes_from_the_model():
    cfg = _config.get_config("pi06_yam_vial_30fps_lora")
    frozen = cfg.get_freeze_filter()
    assert frozen("PaliGemma/llm/layers/attn/q_einsum/w")
    assert not frozen("PaliGemma/llm/layers/attn/q_einsum/lora_a")
    assert not frozen("PaliGemma/img/head/kernel")
    assert not _config.get_config("pi06_yam_vial_30fps").get_freeze_filter()("PaliGemma/llm/layers/attn/q_einsum/w")


def test_yam_data_config_transforms(tmp_path, tiny_spm_model):
    from openpi.shared import normalize

    cfg = _config.get_config("debug_pi06")
    stats = normalize.NormStats(mean=[0.0] * 14, std=[1.0] * 14, q01=[-1.0] * 14, q99=[1.0] * 14)
    normalize.save(tmp_path / "assets" / "debug_pi06" / "yam_synthetic", {"state": stats, "actions": stats})
    cfg = dataclasses.replace(cfg, assets_base_dir=str(tmp_path / "assets"), tokenizer_path=str(tiny_spm_model))
    dc = cfg.create_data_config()
    assert dc.norm_stats is not None and dc.use_quantile_norm and dc.asset_id == "yam_synthetic"
    assert "adv_ind" in dc.required_columns
    tokenize = next(t for t in dc.model_transforms.inputs if type(t).__name__ == "TokenizePrompt")
    assert tokenize.use_adv_ind and tokenize.indicator_dropout == 0.3
    infer = cfg.create_data_config(train=False)
    assert next(t for t in infer.model_transforms.inputs if type(t).__name__ == "TokenizePrompt").indicator_dropout == 0
    assert isinstance(cfg.model, pi0_config.Pi0Config)


def test_indicator_dropout_defaults_to_the_papers_rate_for_pi06_only(tiny_spm_model):
    """Issue 14.3: a user-written pi0.6 config trains with the paper's dropout without restating it; pi0.5 never."""
    data = _config.LeRobotYamDataConfig(repo_id="/nonexistent/ds", assets=_config.AssetsConfig(asset_id="x"))

    def dropout(model, train=True, **kw):
        cfg = _config.TrainConfig(name="mine", model=model, data=data, tokenizer_path=str(tiny_spm_model), **kw)
        dc = cfg.create_data_config(train=train)
        return next(t for t in dc.model_transforms.inputs if type(t).__name__ == "TokenizePrompt").indicator_dropout

    pi06 = pi0_config.Pi0Config(pi05=True, pistar=True, paligemma_variant="dummy", action_expert_variant="dummy")
    assert dropout(pi06) == 0.3
    assert _tokenizer.PAPER_INDICATOR_DROPOUT == 0.3  # the one place the paper's rate is written
    assert dropout(pi06, train=False) == 0.0
    assert dropout(pi06, indicator_dropout=0.1) == 0.1
    assert dropout(dataclasses.replace(pi06, pistar=False)) == 0.0
    for name in _config.config_names():  # every registered _infer twin still serves without dropout
        if name.endswith("_infer"):
            assert _config.get_config(name).resolved_indicator_dropout == 0.0, name


def test_every_config_that_drops_the_indicator_has_an_infer_twin():
    """Issue 20: debug_pi06 (dropout 0.3) had no debug_pi06_infer to serve with."""
    names = set(_config.config_names())
    missing = [
        n
        for n in names
        if not n.endswith("_infer")
        and _config.get_config(n).resolved_indicator_dropout > 0
        and f"{n}_infer" not in names
    ]
    assert not missing, missing
    infer = _config.get_config("debug_pi06_infer")
    untwinned = dataclasses.replace(infer, name="debug_pi06", indicator_dropout=None, serving_twin_of=None)
    assert untwinned == _config.get_config("debug_pi06")


def test_demo_recap_starts_from_the_demo_pi06_checkpoint():
    """Issue 20: stage 6 of the demo trained from scratch, where the real `_recap` configs start from a checkpoint."""
    recap, pi06 = _config.get_config("demo_pi06_recap"), _config.get_config("demo_pi06")
    assert isinstance(recap.weight_loader, weight_loaders.CheckpointWeightLoader)
    last = pi06.num_train_steps - 1
    assert recap.weight_loader.params_path == f"./demo_output/checkpoints/demo_pi06/demo/{last}/params"
    assert recap.model == pi06.model  # the weights fit
    moved = _config.cli(
        ["demo_pi06_recap", "--exp-name=x", "--weight-loader.params-path=/runs/demo_pi06/demo/99/params"]
    )
    assert moved.weight_loader == weight_loaders.CheckpointWeightLoader("/runs/demo_pi06/demo/99/params")


def test_norm_stats_in_both_places_must_agree(tmp_path):
    """Issue 14.4: stats under <assets>/<config>/<asset_id> and <assets>/<asset_id> that differ are refused."""
    from openpi.shared import normalize

    data = _config.LeRobotYamDataConfig(repo_id="/nonexistent/ds", assets=_config.AssetsConfig(asset_id="ds"))
    one = normalize.NormStats(mean=[0.0] * 3, std=[1.0] * 3, q01=[-1.0] * 3, q99=[1.0] * 3)
    two = normalize.NormStats(mean=[5.0] * 3, std=[2.0] * 3, q01=[-1.0] * 3, q99=[9.0] * 3)
    normalize.save(tmp_path / "ds", {"state": one, "actions": one})
    assert data.load_norm_stats(tmp_path / "mine")["state"].allclose(one, atol=0)  # the shared place alone
    normalize.save(tmp_path / "mine" / "ds", {"state": one, "actions": one})
    assert data.load_norm_stats(tmp_path / "mine")["state"].allclose(one, atol=0)  # both, identical: fine
    normalize.save(tmp_path / "mine" / "ds", {"state": two, "actions": one})
    with pytest.raises(errors.ConfigError, match="differ"):
        data.load_norm_stats(tmp_path / "mine")
