import numpy as np
import sentencepiece

from openpi.shared import testing


def test_tiny_sentencepiece_has_gemma_conventions(tiny_spm_model):
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tiny_spm_model))
    assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sp.get_piece_size() == 512
    assert sp.encode("\n") == [sp.piece_to_id("\n")]
    # Digits are split one by one, as in Gemma; prompt words are whole pieces.
    assert len(sp.encode("255")) == 3
    assert len(sp.encode(" Advantage")) == len(sp.encode(" positive")) == 1


def test_training_is_deterministic(tmp_path):
    a = testing.train_tiny_sentencepiece(tmp_path / "a.model", vocab_size=400)
    b = testing.train_tiny_sentencepiece(tmp_path / "b.model", vocab_size=400)
    assert a.read_bytes() == b.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_paligemma_npz_is_flat_with_slashes(tmp_path):
    params = testing.random_params({"img": {"head": {"kernel": (2, 3)}}, "llm": {"final_norm": {"scale": (4,)}}})
    path = testing.write_paligemma_npz(tmp_path / "pg.npz", params)
    with np.load(path) as npz:
        assert sorted(npz.files) == ["params/img/head/kernel", "params/llm/final_norm/scale"]
        np.testing.assert_array_equal(npz["params/img/head/kernel"], params["img"]["head"]["kernel"])
