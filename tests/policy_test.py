"""Policy semantics on a real dummy-size pi0.6 model and the real YAM transform chain.

One Euler step (num_steps=1) makes classifier-free guidance checkable exactly: the action is then
noise - v, so the guided action must equal the affine mix (1 - beta) a_uncond + beta a_cond, and affine
output transforms (unnormalise, delta -> absolute) preserve that mix.
"""

import dataclasses

import jax
import numpy as np
import pytest

from openpi import transforms as _transforms
from openpi.policies import policy as _policy
from openpi.policies import policy_config
from openpi.policies import yam_policy
from openpi.shared import errors
from openpi.shared import normalize
from openpi.training import config as _config

HORIZON = 8


@pytest.fixture(scope="module")
def train_config(tiny_spm_model):
    config = _config.get_config("debug_pi06")
    assert config.resolved_indicator_dropout > 0  # a training config: the policy must switch dropout off itself
    return dataclasses.replace(
        config, model=dataclasses.replace(config.model, action_horizon=HORIZON), tokenizer_path=str(tiny_spm_model)
    )


@pytest.fixture(scope="module")
def chains(train_config, tmp_path_factory):
    """The config's training-time chain (indicator dropout 0.3), without the dataset repack."""
    data = train_config.create_data_config(train=True)
    rng = np.random.default_rng(0)
    stats = {k: normalize.compute(rng.normal(size=(128, 14)).astype(np.float32)) for k in ("state", "actions")}
    inputs = [
        *data.data_transforms.inputs,
        _transforms.Normalize(stats, use_quantiles=True),
        *data.model_transforms.inputs,
    ]
    outputs = [_transforms.Unnormalize(stats, use_quantiles=True), *data.data_transforms.outputs]
    return inputs, outputs


@pytest.fixture(scope="module")
def params(train_config):
    return policy_config.random_params(train_config.model, seed=3)


def _make(train_config, params, chains, **kwargs) -> _policy.Policy:
    inputs, outputs = chains
    return _policy.Policy(
        train_config.model.model(),
        params,
        transforms=inputs,
        output_transforms=outputs,
        sample_kwargs={"num_steps": 1},
        **kwargs,
    )


@pytest.fixture(scope="module")
def plain(train_config, params, chains):
    return _make(train_config, params, chains, metadata={"robot": "yam"})


@pytest.fixture(scope="module")
def noise():
    return np.random.default_rng(7).normal(size=(HORIZON, 32)).astype(np.float32)


def _obs(**overrides):
    obs = yam_policy.make_yam_example(np.random.default_rng(11), adv_ind=None)
    obs.update(overrides)
    return obs


def test_infer_returns_robot_actions(plain, noise):
    out = plain.infer(_obs(adv_ind="positive"), noise=noise)
    assert out["actions"].shape == (HORIZON, 14)
    assert out["actions"].dtype == np.float32
    assert out["policy_timing"]["infer_ms"] > 0
    assert plain.metadata == {"robot": "yam", "conditions_on_adv_ind": True}


def test_missing_adv_ind_means_positive(plain, noise):
    positive = plain.infer(_obs(adv_ind="positive"), noise=noise)["actions"]
    np.testing.assert_array_equal(plain.infer(_obs(), noise=noise)["actions"], positive)
    for other in ("negative", "none"):
        assert not np.allclose(plain.infer(_obs(adv_ind=other), noise=noise)["actions"], positive), other


def test_indicator_dropout_is_off_even_for_a_training_chain(plain, chains, noise):
    inputs, _ = chains
    train_chain = _transforms.compose(inputs)
    base = train_chain(_obs(adv_ind="positive", sample_id=0))["tokenized_prompt"]
    dropped = [
        k
        for k in range(30)
        if not np.array_equal(train_chain(_obs(adv_ind="positive", sample_id=k))["tokenized_prompt"], base)
    ]
    assert dropped, "the training chain should drop the clause for some frames, or this test proves nothing"
    positive = plain.infer(_obs(adv_ind="positive"), noise=noise)["actions"]
    for k in dropped[:3]:
        np.testing.assert_array_equal(
            plain.infer(_obs(adv_ind="positive", sample_id=k), noise=noise)["actions"], positive
        )


def test_cfg_mixes_conditional_and_unconditional(train_config, params, chains, plain, noise):
    beta = 2.0
    guided = _make(train_config, params, chains, cfg_beta=beta)
    assert guided.cfg_beta == beta
    cond = plain.infer(_obs(adv_ind="positive"), noise=noise)["actions"]
    uncond = plain.infer(_obs(adv_ind="none"), noise=noise)["actions"]
    mixed = guided.infer(_obs(), noise=noise)["actions"]
    np.testing.assert_allclose(mixed, (1 - beta) * uncond + beta * cond, rtol=1e-4, atol=1e-4)
    assert not np.allclose(mixed, cond)


def test_cfg_beta_one_is_plain_conditioning(train_config, params, chains):
    assert _make(train_config, params, chains, cfg_beta=1.0).cfg_beta is None


def test_cfg_needs_the_advantage_clause(train_config, params, chains):
    inputs, outputs = chains
    no_clause = [
        dataclasses.replace(t, use_adv_ind=False) if isinstance(t, _transforms.TokenizePrompt) else t for t in inputs
    ]
    with pytest.raises(errors.ConfigError, match="advantage clause"):
        _make(train_config, params, (no_clause, outputs), cfg_beta=2.0)
    with pytest.raises(errors.ConfigError, match="positive"):
        _make(train_config, params, chains, cfg_beta=-1.0)


@pytest.mark.parametrize(
    ("obs", "message"),
    [
        ([1, 2], "must be a dict"),
        ({"images": {"cam_high": [[1, 2]]}, "state": np.zeros(14)}, "'images/cam_high' is a list"),
        ({"images": {"cam_high": np.zeros((4, 4, 3), bool)}, "state": np.zeros(14)}, "dtype bool"),
        ({"images": {"cam_high": np.zeros((4, 4, 3), np.uint8)}, "state": "zeros"}, "'state' has dtype str"),
        ({"images": {"cam_high": np.zeros((4, 4, 3), np.uint8)}, "state": np.zeros((2, 7))}, "1-d vector"),
        ({"images": {"cam_high": np.zeros((4, 4, 3), np.uint8)}, "state": [[1.0], [1.0, 2.0]]}, "'state' has dtype"),
        ({"observation/image": np.zeros((4, 4), np.uint8)}, "'observation/image' has shape (4, 4)"),
    ],
)
def test_check_request(obs, message):
    with pytest.raises(_policy.ObservationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _policy.check_request(obs)


def test_check_request_accepts_a_yam_example():
    _policy.check_request(yam_policy.make_yam_example())
    _policy.check_request({"images": {"cam_high": np.zeros((224, 224, 3), np.float32)}, "state": [0.0] * 14})
    # Not images or states: left to the robot transforms.
    _policy.check_request({"camera_names": ["cam_high"], "image_path": "a.png", "images": {"cam_high_mask": True}})


def test_bad_requests_raise_user_errors(plain):
    with pytest.raises(errors.UserError, match="advantage indicator"):
        plain.infer(_obs(adv_ind="maybe"))
    with pytest.raises(errors.UserError, match="cam_high"):
        obs = _obs()
        del obs["images"]["cam_high"]
        plain.infer(obs)
    with pytest.raises(errors.UserError, match="14 dims"):
        plain.infer(_obs(state=np.zeros(7, np.float32)))


@pytest.mark.parametrize("value", [None, "", float("nan"), True, "maybe", np.array(["none", "none"])])
def test_a_served_indicator_must_be_one_of_the_three_words(plain, value):
    """Issue 20.1: None and "" used to be served unconditionally, while a missing key means positive."""
    with pytest.raises(errors.UserError, match=r"'adv_ind' must be one of 'positive', 'negative' or 'none'") as e:
        plain.infer(_obs(adv_ind=value))
    assert "leave the key out" in str(e.value)


def test_a_prompt_that_would_cut_off_the_indicator_is_a_bad_request(plain, noise):
    """Issue 29.1: a 679-character prompt gave identical actions for positive and negative (clause cut off)."""
    long_prompt = "pick up the vial and place it in the rack " * 16
    for adv_ind in ("positive", "negative"):
        with pytest.raises(errors.UserError, match=r"raise max_token_len .* or shorten the task"):
            plain.infer(_obs(prompt=long_prompt, adv_ind=adv_ind), noise=noise)


def test_action_stats_narrower_than_the_robot_actions_are_refused(train_config, params, chains, noise):
    """Issue 29.2: 7-dim action stats on a 14-dim robot sent dims 7-13 in normalised model units."""
    inputs, outputs = chains
    wide = outputs[0].norm_stats
    narrow = {**wide, "actions": normalize.NormStats(**{k: v[:7] for k, v in wide["actions"].to_dict().items()})}
    policy = _make(
        train_config,
        params,
        (inputs, [_transforms.Unnormalize(narrow, use_quantiles=True), *outputs[1:]]),
    )
    with pytest.raises(errors.UserError, match=r"'actions' .* have 7 dims but the data has 14, so dims 7-13") as e:
        policy.infer(_obs(), noise=noise)
    assert "robot" in str(e.value)


def test_a_non_finite_state_is_named_by_its_dims_not_printed_whole(plain):
    """Issue 20: the NaN-state reply printed the whole array and blamed normalisation."""
    state = np.zeros(14, np.float32)
    state[[3, 9]] = np.nan
    state[11] = np.inf
    with pytest.raises(errors.UserError, match=r"State 'state' has 3 NaN/inf values \(dims \[3, 9, 11\]\)") as e:
        plain.infer(_obs(state=state))
    assert "nan, nan" not in str(e.value) and "array(" not in str(e.value) and len(str(e.value)) < 200


def test_repack_transforms_keep_the_served_indicator(train_config, params, chains, plain, noise):
    """Issue 14.2: a serving repack that does not name adv_ind must not turn the prompt unconditional."""
    inputs, outputs = chains
    structure = {"images": {c: f"images/{c}" for c in ("cam_high", "cam_left_wrist", "cam_right_wrist")}}
    repack = _transforms.RepackTransform({**structure, "state": "state", "prompt": "prompt"})
    served = _make(train_config, params, ([repack, *inputs], outputs))
    for adv_ind in ("positive", "negative", "none"):
        expected = plain.infer(_obs(adv_ind=adv_ind), noise=noise)["actions"]
        np.testing.assert_array_equal(served.infer(_obs(adv_ind=adv_ind), noise=noise)["actions"], expected)
    np.testing.assert_array_equal(
        served.infer(_obs(), noise=noise)["actions"], plain.infer(_obs(adv_ind="positive"), noise=noise)["actions"]
    )


def test_misleading_replies_are_fixed(train_config, params, chains, plain):
    """Issue 14.9: no reply names the key the server inserted itself; a missing prompt points at --default-prompt."""
    with pytest.raises(errors.UserError) as info:
        plain.infer({"prompt": "x"})
    assert "adv_ind" not in str(info.value)
    inputs, outputs = chains
    without_default = [t for t in inputs if not isinstance(t, _transforms.InjectDefaultPrompt)]
    served = _make(train_config, params, (without_default, outputs))
    obs = _obs()
    del obs["prompt"]
    with pytest.raises(errors.UserError, match="--default-prompt"):
        served.infer(obs)
    with pytest.raises(_policy.ObservationError, match=r"scalar"):
        _policy.check_request({"state": 1.0})
    with pytest.raises(_policy.ObservationError, match=r"\(0, 0, 3\)"):
        _policy.check_request({"images": {"cam_high": np.zeros((0, 0, 3), np.uint8)}, "state": np.zeros(14)})


def test_noise_per_observation_does_not_depend_on_the_order_of_requests(train_config, params, chains):
    """Two clients interleave their requests differently on every run; with `noise_per_observation` the sampling
    noise of a request is a function of the seed, the observation and how often that observation came before, so a
    rollout (and an evaluation) repeats exactly whatever the interleaving."""
    first, second = _obs(adv_ind="positive"), _obs(adv_ind="negative")
    a = _make(train_config, params, chains, noise_per_observation=True)
    b = _make(train_config, params, chains, noise_per_observation=True)
    a1, a2 = a.infer(first)["actions"], a.infer(second)["actions"]
    b2, b1 = b.infer(second)["actions"], b.infer(first)["actions"]
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    # The same observation again (a robot stuck in one state) draws new noise, as a fresh request would.
    again = a.infer(first)["actions"]
    assert not np.allclose(again, a1)
    np.testing.assert_array_equal(again, b.infer(first)["actions"])
    # Another seed, other noise.
    other = _make(train_config, params, chains, noise_per_observation=True, rng=jax.random.key(1))
    assert not np.allclose(other.infer(first)["actions"], a1)


def test_by_default_the_noise_follows_the_order_of_requests(train_config, params, chains):
    first, second = _obs(adv_ind="positive"), _obs(adv_ind="negative")
    a, b = _make(train_config, params, chains), _make(train_config, params, chains)
    a1 = a.infer(first)["actions"]
    b.infer(second)
    assert not np.allclose(b.infer(first)["actions"], a1)
