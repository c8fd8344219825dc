import re

import numpy as np
import pytest

from openpi import transforms as _t
from openpi.models import tokenizer as _tokenizer
from openpi.shared import errors


def _stats(dim):
    return {
        "mean": np.arange(dim, dtype=np.float32),
        "std": np.full(dim, 2.0, np.float32),
        "q01": np.full(dim, -3.0, np.float32),
        "q99": np.full(dim, 5.0, np.float32),
    }


def test_repack_maps_flat_keys_and_drops_the_rest():
    repack = _t.RepackTransform(
        {"images": {"cam_high": "observation.images.head_camera"}, "state": "observation.state"}
    )
    out = repack({"observation.images.head_camera": 1, "observation.state": 2, "unused": 3})
    assert out == {"images": {"cam_high": 1}, "state": 2}
    with pytest.raises(_t.TransformError, match=r"observation\.state"):
        repack({"observation.images.head_camera": 1})


def test_flatten_roundtrip():
    tree = {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    assert _t.unflatten_dict(_t.flatten_dict(tree)) == tree


@pytest.mark.parametrize("quantiles", [False, True])
def test_normalize_unnormalize_roundtrip_and_padding(quantiles):
    rng = np.random.default_rng(0)
    data = {"state": rng.normal(size=14).astype(np.float32), "actions": rng.normal(size=(5, 14)).astype(np.float32)}
    stats = {"state": _stats(14), "actions": _stats(14)}
    norm = _t.Normalize(stats, use_quantiles=quantiles)(data)
    if quantiles:
        np.testing.assert_allclose(norm["state"], (data["state"] + 3) / (8 + 1e-6) * 2 - 1, rtol=1e-5)
    else:
        np.testing.assert_allclose(norm["state"], (data["state"] - np.arange(14)) / (2 + 1e-6), rtol=1e-5)
    back = _t.Unnormalize(stats, use_quantiles=quantiles)(norm)
    np.testing.assert_allclose(back["actions"], data["actions"], atol=1e-5)
    # Padded model outputs (32 dims) are unnormalised on the first 14 dims only.
    padded = np.concatenate([norm["actions"], np.ones((5, 18), np.float32)], axis=-1)
    out = _t.Unnormalize(stats, use_quantiles=quantiles)({"actions": padded})["actions"]
    np.testing.assert_allclose(out[:, :14], data["actions"], atol=1e-5)
    np.testing.assert_array_equal(out[:, 14:], 1.0)


def test_normalize_strict_and_missing_quantiles():
    with pytest.raises(_t.TransformError, match="state"):
        _t.Normalize({"state": _stats(3)}, strict=True)({"actions": np.zeros(3)})
    with pytest.raises(errors.UserError, match="q01"):
        _t.Normalize({"state": {"mean": [0.0], "std": [1.0], "q01": None, "q99": None}}, use_quantiles=True)(
            {"state": np.zeros(1)}
        )


def test_resize_with_pad_keeps_aspect_and_pads_black():
    image = np.full((2, 60, 120, 3), 200, np.uint8)
    out = _t.ResizeImages(64, 64)({"image": {"base_0_rgb": image}})["image"]["base_0_rgb"]
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.uint8
    assert (out[:, :16] == 0).all() and (out[:, 48:] == 0).all() and (out[:, 20:44] == 200).all()
    floats = _t.resize_with_pad(np.full((30, 30, 3), 0.5, np.float32), 10, 20)
    assert floats.shape == (10, 20, 3) and floats.dtype == np.float32
    np.testing.assert_allclose(floats[:, 5:15], 0.5, atol=1e-6)
    assert (floats[:, :5] == 0).all()


def test_delta_and_absolute_actions_roundtrip():
    mask = _t.make_bool_mask(6, -1, 6, -1)
    assert mask == (True,) * 6 + (False,) + (True,) * 6 + (False,)
    rng = np.random.default_rng(1)
    data = {"state": rng.normal(size=14).astype(np.float32), "actions": rng.normal(size=(4, 14)).astype(np.float32)}
    delta = _t.DeltaActions(mask)(data)
    np.testing.assert_allclose(delta["actions"][:, 0], data["actions"][:, 0] - data["state"][0], rtol=1e-6)
    np.testing.assert_array_equal(delta["actions"][:, 6], data["actions"][:, 6])
    back = _t.AbsoluteActions(mask)(delta)
    np.testing.assert_allclose(back["actions"], data["actions"], atol=1e-6)
    assert _t.DeltaActions(None)(data) is data


def test_pad_states_and_actions():
    out = _t.PadStatesAndActions(32)({"state": np.ones(14), "actions": np.ones((3, 14))})
    assert out["state"].shape == (32,) and out["actions"].shape == (3, 32)
    assert out["state"][14:].sum() == 0
    with pytest.raises(_t.TransformError, match="action_dim"):
        _t.PadStatesAndActions(8)({"state": np.ones(14)})


def test_inject_default_prompt_only_when_missing():
    assert _t.InjectDefaultPrompt("x")({})["prompt"] == "x"
    assert _t.InjectDefaultPrompt("x")({"prompt": "y"})["prompt"] == "y"


def test_group_push_order():
    a, b, c, d = (_t.InjectDefaultPrompt(s) for s in "abcd")
    group = _t.Group(inputs=(a,), outputs=(b,)).push(inputs=(c,), outputs=(d,))
    assert group.inputs == (a, c) and group.outputs == (d, b)


def _tokenize(tiny_spm_model, **kw):
    tok = _tokenizer.PaligemmaTokenizer(max_len=200, model_path=tiny_spm_model)
    return tok, _t.TokenizePrompt(tok, discrete_state_input=True, use_adv_ind=True, **kw)


def test_tokenize_prompt_pi06_formats(tiny_spm_model):
    tok, transform = _tokenize(tiny_spm_model)
    state = np.linspace(-1, 1, 14).astype(np.float32)
    for adv, clause in [("positive", ", Advantage: positive"), (np.array(["negative"]), ", Advantage: negative")]:
        out = transform({"prompt": "fold_the towel", "state": state, "adv_ind": adv})
        text = tok.decode(out["tokenized_prompt"][out["tokenized_prompt_mask"]])
        assert text.startswith("Task: fold the towel, State: ") and clause + ";\nAction:" in text
        assert "adv_ind" not in out and "prompt" not in out
    for adv in ("none", None):
        out = transform({"prompt": "fold the towel", "state": state, "adv_ind": adv})
        text = tok.decode(out["tokenized_prompt"][out["tokenized_prompt_mask"]])
        assert "Advantage" not in text and "none" not in text


def test_indicator_dropout_is_seeded_and_near_rate(tiny_spm_model):
    tok, transform = _tokenize(tiny_spm_model, indicator_dropout=0.3, seed=7)
    state = np.zeros(14, np.float32)

    def has_clause(i, t=transform):
        out = t({"prompt": "x", "state": state, "adv_ind": "positive", "sample_id": i})
        return "Advantage" in tok.decode(out["tokenized_prompt"][out["tokenized_prompt_mask"]])

    draws = [has_clause(i) for i in range(300)]
    assert draws == [has_clause(i) for i in range(300)]  # same seed + sample id -> same draw
    assert 0.6 < np.mean(draws) < 0.8
    _, other_seed = _tokenize(tiny_spm_model, indicator_dropout=0.3, seed=8)
    assert draws != [has_clause(i, other_seed) for i in range(300)]


def test_tokenize_requires_prompt(tiny_spm_model):
    _, transform = _tokenize(tiny_spm_model)
    with pytest.raises(_t.TransformError, match="prompt"):
        transform({"state": np.zeros(14)})


def _fresh_dict_robot(data):
    """openpi's AlohaInputs / LiberoInputs style: builds a new dict with only the robot keys."""
    return {"state": data["state"], "prompt": data["prompt"]}


def test_indicator_and_dropout_draw_survive_a_fresh_dict_robot_transform(tiny_spm_model):
    """Issue 14.1: the indicator and the per-frame dropout draw must not depend on the robot forwarding keys."""
    tok, tokenize = _tokenize(tiny_spm_model, indicator_dropout=0.5, seed=3)
    chain = _t.compose([_fresh_dict_robot, tokenize])
    state = np.zeros(14, np.float32)
    kept = []
    for i in range(200):
        out = chain({"prompt": "x", "state": state, "adv_ind": "positive", "sample_id": i})
        assert "adv_ind" not in out and "sample_id" not in out  # consumed by the tokenizer, not carried past it
        kept.append("Advantage: positive" in tok.decode(out["tokenized_prompt"][out["tokenized_prompt_mask"]]))
    assert 0.35 < np.mean(kept) < 0.65  # a per-frame draw, not one draw shared by every frame


def test_pi06_tokenizer_refuses_a_frame_without_its_indicator(tiny_spm_model):
    """Issue 14.1: a missing adv_ind key is an error for pi0.6, not the unconditional prompt."""
    _, tokenize = _tokenize(tiny_spm_model)
    with pytest.raises(_t.TransformError, match="no 'adv_ind'"):
        tokenize({"prompt": "x", "state": np.zeros(14, np.float32)})
    _, dropout = _tokenize(tiny_spm_model, indicator_dropout=0.3)
    with pytest.raises(_t.TransformError, match="sample_id"):
        dropout({"prompt": "x", "state": np.zeros(14, np.float32), "adv_ind": "positive"})


@pytest.mark.parametrize("sample_id", [None, "3", 2.5, np.array([1, 2])])
def test_indicator_dropout_refuses_a_sample_id_that_is_not_an_integer(tiny_spm_model, sample_id):
    """Issue 20: sample_id=None raised a raw TypeError from int()."""
    _, dropout = _tokenize(tiny_spm_model, indicator_dropout=0.3)
    frame = {"prompt": "x", "state": np.zeros(14, np.float32), "adv_ind": "positive", "sample_id": sample_id}
    with pytest.raises(
        _t.TransformError, match=re.escape(f"'sample_id' must be one integer (the frame's id), got {sample_id!r}")
    ):
        dropout(frame)
    dropout({**frame, "sample_id": np.int64(3)})


def test_resize_with_pad_refuses_empty_images():
    """Issue 14.9: a (0, 0, 3) image used to raise ZeroDivisionError."""
    with pytest.raises(_t.TransformError, match="empty"):
        _t.resize_with_pad(np.zeros((0, 0, 3), np.uint8), 224, 224)


def test_state_bins_use_the_float64_normalised_value(tiny_spm_model):
    """Issue 14.12: openpi bins the float64 normalised state; a float32 cast first moves edge values one bin up."""
    tok, tokenize = _tokenize(tiny_spm_model)
    edge = -1 + 192 / 128  # 0.5, the lower edge of bin 192
    state = np.array([edge - 1e-12, 0.0])  # float64: bin 191; as float32 it would round to the edge, bin 192
    out = tokenize({"prompt": "x", "state": state, "adv_ind": "none"})
    assert "State: 191 128;" in tok.decode(out["tokenized_prompt"][out["tokenized_prompt_mask"]])
    # Normalize hands the tokenizer the float64 normalised value, as openpi (float32 data minus float64 stats).
    stats = {"state": {"mean": np.zeros(2), "std": np.full(2, 3.0), "q01": -np.ones(2), "q99": np.ones(2)}}
    x = np.array([1.5, -0.7], np.float32)
    normed = _t.Normalize(stats)({"state": x})["state"]
    np.testing.assert_array_equal(normed, (x - np.zeros(2)) / (np.full(2, 3.0) + 1e-6))
    assert normed.dtype == np.float64
    # After tokenisation the model still gets float32.
    assert _t.PadStatesAndActions(4)({"state": normed})["state"].dtype == np.float32


def test_normalize_refuses_stats_narrower_than_the_data():
    """Issue 20.4: 7-dim state stats on 14-dim data normalised dims 0-6 and passed 7-13 through raw."""
    data = {"state": np.ones(14, np.float32), "actions": np.ones((5, 14), np.float32)}
    with pytest.raises(
        errors.UserError, match=r"Norm stats for 'state' have 7 dims but the data has 14.*dims 7-13.*compute_norm_stats"
    ):
        _t.Normalize({"state": _stats(7), "actions": _stats(14)})(data)
    with pytest.raises(errors.UserError, match=r"'actions' have 7 dims but the data has 14"):
        _t.Normalize({"state": _stats(14), "actions": _stats(7)}, use_quantiles=True)(data)


def test_normalize_accepts_wider_stats_only_when_the_extra_dims_are_padding():
    """openpi's rule: stats computed on zero-padded data are sliced to the data's dims; real extra dims are refused."""
    padded = {k: np.concatenate([v, np.zeros(18, np.float32)]) for k, v in _stats(14).items()}
    x = np.arange(14, dtype=np.float32)
    np.testing.assert_array_equal(
        _t.Normalize({"state": padded})({"state": x})["state"],
        _t.Normalize({"state": _stats(14)})({"state": x})["state"],
    )
    with pytest.raises(errors.UserError, match=r"'state' have 14 dims but the data has 7.*dims 7-13 are not padding"):
        _t.Normalize({"state": _stats(14)})({"state": np.ones(7)})


def test_training_refuses_a_prompt_whose_indicator_would_be_cut(tiny_spm_model):
    """Issue 29.1: with a 679-character task the clause was cut off and the frame trained as BC."""
    _, transform = _tokenize(tiny_spm_model, indicator_dropout=0.3)
    frame = {"prompt": "pick up the vial and place it in the rack " * 16, "state": np.zeros(14, np.float32)}
    outcomes = []
    for sample_id in range(10):
        try:
            transform({**frame, "adv_ind": "positive", "sample_id": sample_id})
            outcomes.append("dropped")  # no clause to cut (a warned truncation of the pi0.5 prompt)
        except _tokenizer.TokenizerError as e:
            assert "Advantage: positive" in str(e) and "max_token_len=200" in str(e)
            outcomes.append("refused")
    assert "refused" in outcomes and outcomes.count("refused") >= 5, outcomes
