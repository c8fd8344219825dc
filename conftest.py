"""Session-wide test fixtures shared by every engineer's tests.

The tokenizer fixtures train real SentencePiece models once per test session (tens of milliseconds) with the
same special ids and options as the PaliGemma / Gemma 3 tokenizers; see `openpi.shared.testing`.
"""

import pathlib

import pytest

from openpi.shared import testing


@pytest.fixture(scope="session")
def tiny_spm_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Path of a tiny PaliGemma-like SentencePiece model (pad=0, eos=1, bos=2, unk=3, byte fallback)."""
    return testing.train_tiny_sentencepiece(tmp_path_factory.mktemp("spm") / "paligemma_tokenizer.model")


@pytest.fixture(scope="session")
def gemma3_spm_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Path of a tiny Gemma 3-like SentencePiece model: as `tiny_spm_model` plus the turn/image control pieces."""
    return testing.train_tiny_sentencepiece(
        tmp_path_factory.mktemp("spm_gemma3") / "tokenizer.model", extra_symbols=testing.GEMMA3_SYMBOLS
    )
