"""SentencePiece tokenizers and the pi0 / pi0.5 / pi0.6 prompt formats.

The prompt strings must stay byte-exact with what openpi and the community RECAP forks trained on,
or their checkpoints see text they never saw:

    pi0    BOS + "{text}" + "\\n"              ("\\n" encoded on its own, as openpi does)
    pi0.5  BOS + "Task: {text}, State: {bins};\\nAction: "
    pi0.6  BOS + "Task: {text}, State: {bins}, Advantage: {positive|negative};\\nAction: "
    pi0 + indicator (RECAP on pi0)  BOS + "{text}, Advantage: {positive|negative}" + "\\n"

`text` is the task with surrounding whitespace stripped and "_" and newlines turned into spaces (no
lower-casing, as in openpi). `bins` is the normalised state digitised into 256 bins over [-1, 1], joined by
spaces. The indicator "none" (or a missing one) means "no clause": the pi0.5 prompt, never the literal
`Advantage: none` that one community tool emits.
"""

import dataclasses
import logging
import os
import pathlib
from typing import ClassVar

import numpy as np

from openpi.recap.vocab import INDICATORS
from openpi.recap.vocab import NEGATIVE
from openpi.recap.vocab import NO_INDICATOR
from openpi.recap.vocab import POSITIVE
from openpi.recap.vocab import is_indicator
from openpi.shared import download
from openpi.shared import errors

logger = logging.getLogger(__name__)


NUM_STATE_BINS = 256
# The paper's indicator dropout rate (30 % of training frames see the unconditional prompt). Stated here once:
# `IndicatorDropout` and `TrainConfig.indicator_dropout` (its default for pi0.6 models) both read it.
PAPER_INDICATOR_DROPOUT = 0.3


class InvalidIndicatorError(errors.UserError, ValueError):
    """An advantage indicator is not one of positive / negative / none."""


class TokenizerError(errors.UserError, ValueError):
    """A prompt or state cannot be tokenized as asked."""


def clean_text(prompt: str) -> str:
    """openpi's task-text cleaning: strip, then "_" and newlines become spaces (case is kept)."""
    return prompt.strip().replace("_", " ").replace("\n", " ")


def discretize_state(state: np.ndarray) -> np.ndarray:
    """Bins a normalised 1-D state into 0..255 over [-1, 1] exactly as openpi (below -1 gives -1, above 1 gives 255)."""
    state = np.asarray(state)
    if state.ndim != 1:
        raise TokenizerError(
            f"The state for the prompt must be one vector, got shape {state.shape}; tokenize one frame at a time."
        )
    if not np.issubdtype(state.dtype, np.number):
        raise TokenizerError(f"The state for the prompt must be numbers, got dtype {state.dtype}; check the state.")
    bad = np.flatnonzero(~np.isfinite(state))
    if len(bad):
        dims = bad[:8].tolist() + (["..."] if len(bad) > 8 else [])
        raise TokenizerError(
            f"The normalised state for the prompt has {len(bad)} NaN/inf values (dims {dims}); check the state and "
            "its norm stats."
        )
    return np.digitize(state, bins=np.linspace(-1, 1, NUM_STATE_BINS + 1)[:-1]) - 1


def state_to_text(state: np.ndarray) -> str:
    """The state clause of the pi0.5 prompt: bin indices joined by single spaces."""
    return " ".join(str(int(b)) for b in discretize_state(state))


def normalize_indicator(adv_ind: object) -> str | None:
    """Maps an `adv_ind` value to "positive", "negative" or None (no clause).

    Accepts str / bytes / numpy strings, a one-element array of them (a LeRobot `string [1]` cell), booleans
    (True = positive) and missing values (None, NaN). Case and surrounding whitespace are ignored.
    """
    value = adv_ind
    if isinstance(value, np.ndarray | list | tuple):
        arr = np.asarray(value, dtype=object).reshape(-1)
        if arr.size != 1:
            raise InvalidIndicatorError(
                f"The advantage indicator must be a single value, got {arr.size} values {value!r}; "
                "pass one of positive / negative / none per frame."
            )
        value = arr[0]
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None  # a missing cell (None, or NaN from pandas)
    if isinstance(value, bool | np.bool_):
        return POSITIVE if value else NEGATIVE
    if isinstance(value, bytes | np.bytes_):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        text = value.strip().lower()
        if text in INDICATORS:
            return text
        if text in NO_INDICATOR:
            return None
    raise InvalidIndicatorError(
        f"Unknown advantage indicator {adv_ind!r}; valid values are 'positive', 'negative' and 'none' "
        "(or a missing value, meaning no indicator)."
    )


def parse_indicator(adv_ind: object, *, source: str = "'adv_ind'") -> str:
    """A requested indicator that must be one of the three words: returns "positive", "negative" or "none".

    Unlike `normalize_indicator` (which reads a missing cell as "no clause"), this applies the one rule of
    `openpi.recap.vocab.is_indicator`, which the dataset check applies too: exactly "positive", "negative" or
    "none", so "None", "POSITIVE", " positive", None, NaN, "", bytes and booleans are refused, and a client's
    value is served only if a dataset could hold it. A one-element array (a LeRobot `string [1]` cell) is unwrapped.
    """
    value = adv_ind
    if isinstance(value, np.ndarray | list | tuple):
        arr = np.asarray(value, dtype=object).reshape(-1)
        value = arr[0] if arr.size == 1 else None
    if is_indicator(value):
        return str(value)
    raise InvalidIndicatorError(
        f"The advantage indicator {source} must be one of 'positive', 'negative' or 'none', got {adv_ind!r}; send "
        "one of these words exactly, in lower case ('none' for the unconditional prompt), or leave the key out for "
        "the server's default."
    )


def format_prompt(prompt: str, state: np.ndarray | None = None, adv_ind: object = None) -> str:
    """The full prompt string (without BOS): pi0 when `state` is None, else pi0.5; the indicator adds its clause."""
    text = clean_text(prompt)
    indicator = normalize_indicator(adv_ind)
    if state is None:
        # pi0 keeps its state continuous; RECAP on pi0 appends the same clause to the task text.
        return f"{text}\n" if indicator is None else f"{text}, Advantage: {indicator}\n"
    bins = state_to_text(state)
    if indicator is None:
        return f"Task: {text}, State: {bins};\nAction: "
    return f"Task: {text}, State: {bins}, Advantage: {indicator};\nAction: "


@dataclasses.dataclass(frozen=True)
class IndicatorDropout:
    """Drops the advantage clause with probability `rate` at training time (the paper's 30 %).

    Training on both prompts is what makes classifier-free guidance possible at inference. The random
    generator is passed in, so the caller owns seeding; one number is drawn per call whether or not there
    is an indicator, so the stream does not depend on the labels.
    """

    rate: float = PAPER_INDICATOR_DROPOUT

    def __post_init__(self):
        if not 0.0 <= self.rate <= 1.0:
            raise errors.ConfigError(f"IndicatorDropout.rate must be in [0, 1], got {self.rate}.")

    def apply(self, adv_ind: object, rng: np.random.Generator) -> str | None:
        """Returns the normalised indicator, or None (no clause) with probability `rate`."""
        indicator = normalize_indicator(adv_ind)
        dropped = rng.random() < self.rate
        return None if dropped else indicator


class SentencePieceTokenizer:
    """Loads a SentencePiece model by path (or from its default place in the openpi cache) and pads/truncates.

    Subclasses set the default cache location and how to obtain the file, and add their prompt formats.
    """

    default_relpath: ClassVar[str] = ""
    how_to_get: ClassVar[str] = ""

    def __init__(self, model_path: str | os.PathLike | None = None, *, max_len: int):
        import sentencepiece  # deferred: keeps `import openpi.models` light

        if max_len < 1:
            raise errors.ConfigError(f"{type(self).__name__}: max_len must be at least 1, got {max_len}.")
        self._max_len = max_len
        self.model_path = self._resolve(model_path)
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_proto=self.model_path.read_bytes())
        except (RuntimeError, OSError) as e:
            raise errors.CheckpointError(
                f"{self.model_path} is not a readable SentencePiece model ({e}); replace it with the real file."
            ) from e

    @classmethod
    def default_path(cls) -> pathlib.Path:
        return download.get_cache_dir(create=False) / cls.default_relpath

    def _resolve(self, model_path: str | os.PathLike | None) -> pathlib.Path:
        if model_path is not None:
            try:
                return download.maybe_download(model_path)
            except download.ArtefactNotFoundError as e:
                raise errors.CheckpointError(f"Tokenizer model not found: {e}") from e
        path = self.default_path()
        if not path.is_file():
            raise errors.CheckpointError(
                f"{type(self).__name__} needs its SentencePiece model at {path} (the cache root is "
                f"${download.OPENPI_DATA_HOME}, default {download.DEFAULT_CACHE_DIR}); {self.how_to_get}, or pass "
                "model_path=<local file>."
            )
        return path.resolve()

    @property
    def max_len(self) -> int:
        return self._max_len

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    @property
    def pad_id(self) -> int:
        # Gemma's pad id is 0; a model without one still pads with 0, as openpi does.
        return max(self._sp.pad_id(), 0)

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        return list(self._sp.encode(text, add_bos=add_bos, add_eos=add_eos))

    def decode(self, tokens) -> str:
        return self._sp.decode([int(t) for t in tokens])

    def pad(self, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Pads with `pad_id` (mask False) to `max_len`, or truncates with a warning; returns int32 / bool arrays."""
        n = len(tokens)
        if n > self._max_len:
            logger.warning(
                "Prompt has %d tokens, more than max_len=%d; truncating. Raise max_token_len in the model config "
                "if this happens often.",
                n,
                self._max_len,
            )
            tokens = tokens[: self._max_len]
            n = self._max_len
        out = np.full((self._max_len,), self.pad_id, dtype=np.int32)
        out[:n] = tokens
        mask = np.zeros((self._max_len,), dtype=bool)
        mask[:n] = True
        return out, mask


class PaligemmaTokenizer(SentencePieceTokenizer):
    """The PaliGemma tokenizer with the pi0 / pi0.5 / pi0.6 prompt formats (see the module docstring)."""

    default_relpath = "big_vision/paligemma_tokenizer.model"
    how_to_get = "download it with `gsutil cp gs://big_vision/paligemma_tokenizer.model <that path>`"

    def __init__(self, max_len: int = 48, model_path: str | os.PathLike | None = None):
        super().__init__(model_path, max_len=max_len)

    def tokenize(
        self, prompt: str, state: np.ndarray | None = None, adv_ind: object = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tokens (int32 [max_len]) and mask (bool [max_len]) of the prompt in the format `format_prompt` picks.

        A prompt longer than `max_len` is truncated with a warning, as in openpi, unless it carries the advantage
        clause: that clause comes last, so truncation cuts it off and "positive" and "negative" become the same
        prompt (training those frames as BC, serving them unconditionally). That is a `TokenizerError` instead, at
        training and at serving alike. The task text is not shortened to make room: that would condition the model
        on an instruction nobody wrote, and differently wherever max_token_len differs; the fix is a larger
        max_token_len or a shorter task, which only the user can choose.
        """
        full = format_prompt(prompt, state, adv_ind)
        if state is None:
            # pi0: openpi encodes the "\n" start-of-answer marker on its own, not as part of the text.
            tokens = self.encode(full[:-1], add_bos=True) + self.encode("\n")
        else:
            tokens = self.encode(full, add_bos=True)
        indicator = normalize_indicator(adv_ind)
        if indicator is not None and len(tokens) > self.max_len:
            raise TokenizerError(
                f"The prompt is {len(tokens)} tokens with its 'Advantage: {indicator}' clause, more than "
                f"max_token_len={self.max_len}, so the clause would be cut off; raise max_token_len in the model config "
                f"or shorten the task ({len(clean_text(prompt))} characters)."
            )
        return self.pad(tokens)


class Gemma3Tokenizer(SentencePieceTokenizer):
    """The Gemma 3 tokenizer used by the value model: BOS + cleaned text, padded like the policy's."""

    default_relpath = "gemma3/tokenizer.model"
    how_to_get = (
        "copy `tokenizer.model` from the Gemma 3 release (e.g. the google/gemma-3-270m files on Kaggle or "
        "Hugging Face) there"
    )

    def __init__(self, model_path: str | os.PathLike | None = None, max_len: int = 48):
        super().__init__(model_path, max_len=max_len)

    def tokenize(self, prompt: str, *, add_eos: bool = False) -> tuple[np.ndarray, np.ndarray]:
        return self.pad(self.encode(clean_text(prompt), add_bos=True, add_eos=add_eos))
