"""Tiny real artefacts for tests and the offline demo.

No tokenizer or weight file can be downloaded here, so tests (and the demo) write their own, in exactly
the layout the real ones have: a SentencePiece model trained in milliseconds with Gemma's special ids and
options, an Orbax params checkpoint written with the raw Orbax calls openpi uses (independent of our own
`params_io.save_params`, so a test compares two writers), and a big_vision PaliGemma `.npz`. They are
small, but the loading code that reads them is the one that reads the real files.
"""

from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
import io
import os
import pathlib
from typing import Any

import numpy as np

from openpi.shared import atomic

# Gemma / PaliGemma special ids; the real tokenizers use the same four.
PAD_ID = 0
EOS_ID = 1
BOS_ID = 2
UNK_ID = 3

# Extra control pieces of the Gemma 3 tokenizer that a value-model prompt may use.
GEMMA3_SYMBOLS = ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>")

_TASKS = (
    "pick up the vial and place it in the rack",
    "fold the towel",
    "open the drawer",
    "close the drawer",
    "put the red cube in the bowl",
    "stack the blue block on the green block",
    "wipe the table with the sponge",
    "hand the cup to the left arm",
    "insert the peg into the hole",
    "do something",
)


def tiny_corpus() -> Iterator[str]:
    """Sentences covering the prompt formats (pi0, pi0.5, pi0.6), every state bin 0..255 and task words."""
    for i in range(256):
        task = _TASKS[i % len(_TASKS)]
        bins = f"{i} {255 - i} {(i * 37) % 256} {(i * 101) % 256}"
        yield f"{task}\n"
        yield f"Task: {task}, State: {bins};\nAction: "
        yield f"Task: {task}, State: {bins}, Advantage: positive;\nAction: "
        yield f"Task: {task}, State: {bins}, Advantage: negative;\nAction: "
    yield "The robot arm moves the gripper to the object, grasps it, lifts it and puts it down again."
    yield "Success failure value return reward episode frame camera image wrist base left right."


def train_tiny_sentencepiece(
    path: str | os.PathLike,
    *,
    vocab_size: int = 512,
    extra_symbols: Iterable[str] = (),
    corpus: Iterable[str] | None = None,
) -> pathlib.Path:
    """Trains a tiny SentencePiece model with Gemma's conventions and writes it atomically to `path`.

    Like the PaliGemma / Gemma 3 tokenizers: pad=0, eos=1, bos=2, unk=3; byte fallback (any text encodes);
    digits split one by one; identity normalisation, no dummy prefix and no whitespace squeezing (so
    "\\n" and double spaces survive); "\\n" is its own piece. BPE, so prompt words become whole pieces and
    prompt lengths resemble the real tokenizer's. `vocab_size` must exceed the 256 byte pieces plus the
    specials; a custom corpus too small for it yields fewer pieces instead of failing.
    """
    import sentencepiece  # only tests and the demo pay for the import

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(corpus if corpus is not None else tiny_corpus())),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        bos_id=BOS_ID,
        unk_id=UNK_ID,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        user_defined_symbols=["\n", *extra_symbols],
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    write_bytes_atomic(path, model.getvalue())
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    """Writes `data` to a temporary sibling and renames it into place, so readers never see half a file."""
    return atomic.write_bytes(path, data)


def random_params(shapes: Mapping[str, Any], *, seed: int = 0, dtype: Any = np.float32) -> dict:
    """A nested dict of random arrays; `shapes` is nested too, its leaves are shape tuples."""
    rng = np.random.default_rng(seed)

    def build(node: Mapping[str, Any]) -> dict:
        return {
            k: build(v) if isinstance(v, Mapping) else rng.standard_normal(tuple(v)).astype(dtype)
            for k, v in node.items()
        }

    return build(shapes)


def write_openpi_params_checkpoint(path: str | os.PathLike, params: Mapping[str, Any], *, nnx_state: bool = False):
    """Writes `params` the way openpi does: an Orbax PyTree checkpoint whose top-level item is "params".

    With `nnx_state=True` every leaf sits under an extra "value" key, as in checkpoints that openpi's
    trainer saves from an `nnx.State`. Uses the raw Orbax API on purpose (not our `save_params`).
    """
    import orbax.checkpoint as ocp

    def wrap(node):
        if isinstance(node, Mapping):
            return {k: wrap(v) for k, v in node.items()}
        return {"value": np.asarray(node)} if nnx_state else np.asarray(node)

    path = pathlib.Path(path).resolve()
    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save(path, {"params": wrap(params)})
    return path


def write_paligemma_npz(path: str | os.PathLike, params: Mapping[str, Any]) -> pathlib.Path:
    """Writes a big_vision PaliGemma `.npz` (like `pt_224.npz`): one array per leaf, keyed "params/<path>".

    `params` is the PaliGemma tree itself (`{"img": ..., "llm": ...}`); the "params/" prefix is added here.
    """
    flat: dict[str, np.ndarray] = {}

    def walk(prefix: str, node):
        for k, v in node.items():
            key = f"{prefix}/{k}" if prefix else k
            if isinstance(v, Mapping):
                walk(key, v)
            else:
                flat[key] = np.asarray(v)

    walk("params", params)
    buf = io.BytesIO()
    np.savez(buf, **flat)
    return write_bytes_atomic(path, buf.getvalue())


def install_toy_tokenizers(data_home: str | os.PathLike) -> None:
    """Tiny real PaliGemma and Gemma3 SentencePiece models at their real places under `data_home`.

    The real tokenizers cannot be downloaded here; the demo and the simulated experiment point
    $OPENPI_DATA_HOME at `data_home`, so the real loading code runs unchanged. Existing files are kept.
    """
    data_home = pathlib.Path(data_home)
    paligemma = data_home / "big_vision" / "paligemma_tokenizer.model"
    if not paligemma.exists():
        train_tiny_sentencepiece(paligemma)
    gemma3 = data_home / "gemma3" / "tokenizer.model"
    if not gemma3.exists():
        train_tiny_sentencepiece(gemma3, extra_symbols=GEMMA3_SYMBOLS)
