import logging
import shutil

import numpy as np
import pytest

from openpi.models import tokenizer as _tokenizer
from openpi.shared import errors
from openpi.shared import testing

STATE = np.array([-1.0, -0.5, 0.0, 0.25, 0.999, 1.0], dtype=np.float32)
BINS = "0 64 128 160 255 255"


@pytest.fixture(scope="module")
def tok(tiny_spm_model):
    return _tokenizer.PaligemmaTokenizer(max_len=64, model_path=tiny_spm_model)


def test_prompt_formats_are_byte_exact():
    assert _tokenizer.format_prompt("  pick_up the\ncube ") == "pick up the cube\n"
    assert _tokenizer.format_prompt("Pick_up", STATE) == f"Task: Pick up, State: {BINS};\nAction: "
    assert (
        _tokenizer.format_prompt("Pick_up", STATE, "positive")
        == f"Task: Pick up, State: {BINS}, Advantage: positive;\nAction: "
    )
    assert (
        _tokenizer.format_prompt("Pick_up", STATE, "negative")
        == f"Task: Pick up, State: {BINS}, Advantage: negative;\nAction: "
    )


def test_state_bins_follow_openpi_digitize():
    rng = np.random.default_rng(0)
    state = rng.uniform(-1.2, 1.2, size=50)
    expected = np.digitize(state, np.linspace(-1, 1, 257)[:-1]) - 1
    np.testing.assert_array_equal(_tokenizer.discretize_state(state), expected)
    assert _tokenizer.state_to_text(np.array([-1.5, 1.5])) == "-1 255"
    with pytest.raises(_tokenizer.TokenizerError, match=r"1 NaN/inf values \(dims \[1\]\)"):
        _tokenizer.discretize_state(np.array([0.0, np.nan]))
    with pytest.raises(_tokenizer.TokenizerError, match="one vector"):
        _tokenizer.discretize_state(np.zeros((2, 3)))


@pytest.mark.parametrize("none", [None, "", "none", " None ", b"none", np.array(["none"]), [None], float("nan")])
def test_none_indicator_gives_the_unconditional_prompt(none):
    assert _tokenizer.format_prompt("t", STATE, none) == _tokenizer.format_prompt("t", STATE)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("positive", "positive"),
        (" NEGATIVE", "negative"),
        (b"positive", "positive"),
        (np.array(["negative"]), "negative"),
        (np.str_("positive"), "positive"),
        (True, "positive"),
        (np.False_, "negative"),
    ],
)
def test_indicator_spellings(value, expected):
    assert _tokenizer.normalize_indicator(value) == expected


def test_unknown_indicator_lists_the_valid_ones():
    with pytest.raises(_tokenizer.InvalidIndicatorError, match="'positive', 'negative' and 'none'") as e:
        _tokenizer.format_prompt("t", STATE, "good")
    assert isinstance(e.value, errors.UserError)
    with pytest.raises(_tokenizer.InvalidIndicatorError, match="single value"):
        _tokenizer.normalize_indicator(np.array(["positive", "negative"]))
    with pytest.raises(_tokenizer.InvalidIndicatorError):
        _tokenizer.normalize_indicator(1.0)


def test_parse_indicator_accepts_only_the_three_words():
    """Issue 20.1: the serving check refuses what `normalize_indicator` reads as "no clause". Issue 29.5: and it
    applies the dataset check's rule (`vocab.is_indicator`), so other spellings are refused too."""
    for value, expected in [("positive", "positive"), (np.str_("negative"), "negative"), (np.array(["none"]), "none")]:
        assert _tokenizer.parse_indicator(value) == expected
    for value in (None, "", float("nan"), True, 1.0, "good", np.array(["none", "none"]), " Positive ", "None", b"none"):
        with pytest.raises(_tokenizer.InvalidIndicatorError, match="must be one of 'positive', 'negative' or 'none'"):
            _tokenizer.parse_indicator(value)


def test_pi0_with_an_indicator_appends_the_clause_to_the_task_text():
    """RECAP on pi0: no state bins (the state stays continuous), the same clause, then pi0's answer marker."""
    assert _tokenizer.format_prompt("pick_up the vial", None, "positive") == "pick up the vial, Advantage: positive\n"
    assert _tokenizer.format_prompt("t", None, "negative") == "t, Advantage: negative\n"
    assert _tokenizer.format_prompt("t", None, "none") == _tokenizer.format_prompt("t", None) == "t\n"


def test_tokenize_pi06(tok):
    tokens, mask = tok.tokenize("pick_up the vial", STATE, "positive")
    assert tokens.dtype == np.int32 and mask.dtype == np.bool_
    assert tokens.shape == mask.shape == (64,)
    n = int(mask.sum())
    assert mask[:n].all() and not mask[n:].any()
    assert tokens[0] == tok.bos_id == testing.BOS_ID
    assert (tokens[n:] == 0).all()
    assert tok.decode(tokens[1:n]) == _tokenizer.format_prompt("pick_up the vial", STATE, "positive")
    assert list(tokens[:n]) == tok.encode(_tokenizer.format_prompt("pick_up the vial", STATE, "positive"), add_bos=True)


def test_tokenize_pi0_with_an_indicator_encodes_the_newline_separately_and_refuses_a_cut_clause(tok):
    tokens, mask = tok.tokenize("fold_the towel", None, "negative")
    n = int(mask.sum())
    assert list(tokens[:n]) == [tok.bos_id, *tok.encode("fold the towel, Advantage: negative"), *tok.encode("\n")]
    short = _tokenizer.PaligemmaTokenizer(n - 1, tok.model_path)
    with pytest.raises(_tokenizer.TokenizerError, match="clause would be cut off"):
        short.tokenize("fold_the towel", None, "negative")


def test_tokenize_pi0_encodes_newline_separately(tok):
    tokens, mask = tok.tokenize(" fold_the towel\n")
    n = int(mask.sum())
    expected = [tok.bos_id, *tok.encode("fold the towel"), *tok.encode("\n")]
    assert list(tokens[:n]) == expected
    assert tok.decode(tokens[1:n]) == "fold the towel\n"


def test_tokenize_none_equals_pi05(tok):
    a = tok.tokenize("open the drawer", STATE, "none")
    b = tok.tokenize("open the drawer", STATE)
    c = tok.tokenize("open the drawer", STATE, "negative")
    np.testing.assert_array_equal(a[0], b[0])
    assert c[1].sum() > b[1].sum()


def test_byte_fallback_round_trips_any_text(tok):
    text = "greif die Tasse — 杯子 🙂"
    assert tok.decode(tok.encode(text)) == text
    assert testing.UNK_ID not in tok.encode(text)


def test_truncation_without_an_indicator_warns(tiny_spm_model, caplog):
    tok = _tokenizer.PaligemmaTokenizer(max_len=8, model_path=tiny_spm_model)
    for adv_ind in ("none", None):
        with caplog.at_level(logging.WARNING):
            tokens, mask = tok.tokenize("pick up the vial", STATE, adv_ind)
        assert mask.all() and tokens.shape == (8,)
        assert "truncating" in caplog.text


@pytest.mark.parametrize("adv_ind", ["positive", "negative"])
def test_a_prompt_that_would_cut_off_the_indicator_is_refused(tiny_spm_model, adv_ind):
    """Issue 29.1: a long task cut the clause off with a warning, so positive and negative gave the same prompt."""
    full = len(
        _tokenizer.PaligemmaTokenizer(max_len=512, model_path=tiny_spm_model).encode(
            _tokenizer.format_prompt("pick up the vial", STATE, adv_ind), add_bos=True
        )
    )
    fits = _tokenizer.PaligemmaTokenizer(max_len=full, model_path=tiny_spm_model)
    assert fits.tokenize("pick up the vial", STATE, adv_ind)[1].all()
    short = _tokenizer.PaligemmaTokenizer(max_len=full - 1, model_path=tiny_spm_model)
    with pytest.raises(_tokenizer.TokenizerError) as e:
        short.tokenize("pick up the vial", STATE, adv_ind)
    message = str(e.value)
    assert f"{full} tokens" in message and f"max_token_len={full - 1}" in message
    assert f"'Advantage: {adv_ind}'" in message and "raise max_token_len" in message and "shorten the task" in message
    assert isinstance(e.value, errors.UserError)


def test_dropout_rate_and_seeding():
    dropout = _tokenizer.IndicatorDropout(rate=0.3)
    rng = np.random.default_rng(123)
    draws = [dropout.apply("positive", rng) for _ in range(5000)]
    rate = sum(d is None for d in draws) / len(draws)
    assert 0.27 <= rate <= 0.33
    assert set(draws) == {None, "positive"}
    a = [dropout.apply("negative", np.random.default_rng(7)) for _ in range(3)]
    again = [_tokenizer.IndicatorDropout(0.3).apply("negative", np.random.default_rng(7)) for _ in range(3)]
    assert a == again
    assert dropout.apply("none", rng) is None
    assert _tokenizer.IndicatorDropout(0.0).apply(b"negative", rng) == "negative"
    with pytest.raises(errors.ConfigError):
        _tokenizer.IndicatorDropout(rate=1.5)


def test_missing_default_model_names_path_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    with pytest.raises(errors.CheckpointError) as e:
        _tokenizer.PaligemmaTokenizer()
    msg = str(e.value)
    assert str(tmp_path / "big_vision" / "paligemma_tokenizer.model") in msg
    assert "OPENPI_DATA_HOME" in msg and "gsutil cp gs://big_vision/paligemma_tokenizer.model" in msg
    with pytest.raises(errors.CheckpointError, match="gemma3"):
        _tokenizer.Gemma3Tokenizer()
    with pytest.raises(errors.CheckpointError, match="does not exist"):
        _tokenizer.PaligemmaTokenizer(model_path=tmp_path / "nope.model")


def test_default_and_cached_paths_resolve(tmp_path, monkeypatch, tiny_spm_model):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    (tmp_path / "big_vision").mkdir()
    shutil.copy(tiny_spm_model, tmp_path / "big_vision" / "paligemma_tokenizer.model")
    default = _tokenizer.PaligemmaTokenizer()
    cached = _tokenizer.PaligemmaTokenizer(model_path="gs://big_vision/paligemma_tokenizer.model")
    assert default.model_path == cached.model_path == (tmp_path / "big_vision" / "paligemma_tokenizer.model")
    assert default.max_len == 48


def test_corrupt_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(errors.CheckpointError, match="not a readable SentencePiece model"):
        _tokenizer.PaligemmaTokenizer(model_path=bad)


def test_gemma3_tokenizer_shares_the_wrapper(gemma3_spm_model):
    tok = _tokenizer.Gemma3Tokenizer(model_path=gemma3_spm_model, max_len=32)
    assert isinstance(tok, _tokenizer.SentencePieceTokenizer)
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
    assert len(tok.encode("<start_of_turn>")) == 1
    tokens, mask = tok.tokenize(" fold_the towel ", add_eos=True)
    n = int(mask.sum())
    assert tokens[0] == tok.bos_id and tokens[n - 1] == tok.eos_id
    assert tok.decode(tokens[1 : n - 1]) == "fold the towel"
