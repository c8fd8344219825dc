"""Tokenizer latency and params-checkpoint I/O throughput.

Tokenizing runs once per frame in the data loader and once per served request; restoring params is the
start-up cost of every training run and policy server. CPU size: the dummy pi0.5 model (17M params) and
a tiny SentencePiece model trained on the spot (the real PaliGemma model is larger, so real encode times
are somewhat higher). `--full`: the full pi0.5 tree (3.35B params, 13.4 GB in float32; needs that much RAM
and disk).

    uv run benchmarks/weights_io_bench.py [--full]
"""

import dataclasses
import json
import pathlib
import statistics
import tempfile
import time

import jax
import numpy as np

from openpi.models import params_io
from openpi.models import pi0_config
from openpi.models import tokenizer as _tokenizer
from openpi.shared import testing
from openpi.training import weight_loaders

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "weights_io_bench.json"


@dataclasses.dataclass(frozen=True)
class Args:
    full: bool = False
    """Use the full pi0.5 parameter tree instead of the dummy one."""
    repeats: int = 3
    """Timed repeats of each checkpoint operation (median reported)."""
    frames: int = 2000
    """Prompts tokenized for the per-frame latency."""


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(args: Args) -> dict:
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        tok = _tokenizer.PaligemmaTokenizer(203, testing.train_tiny_sentencepiece(tmp / "spm.model"))
        rng = np.random.default_rng(0)
        states = rng.uniform(-1, 1, size=(args.frames, 32)).astype(np.float32)
        start = time.perf_counter()
        for s in states:
            tok.tokenize("pick up the vial and place it in the rack", s, "positive")
        rows.append(("tokenize pi0.6 prompt (32-dim state)", (time.perf_counter() - start) / args.frames * 1e6, "us"))

        variants = {} if args.full else {"paligemma_variant": "dummy", "action_expert_variant": "dummy"}
        shapes = pi0_config.Pi0Config(pi05=True, **variants).params_shape()
        params = jax.tree.map(lambda s: np.ones(s.shape, s.dtype), shapes)
        gb = sum(x.nbytes for x in jax.tree.leaves(params)) / 1e9
        rows.append(("params size", gb, "GB"))
        path = tmp / "params"

        save_s = _median_s(lambda: params_io.save_params(path, params, overwrite=True), args.repeats)
        rows.append(("save_params", gb / save_s, "GB/s"))
        restore_s = _median_s(lambda: params_io.restore_params(path), args.repeats)
        rows.append(("restore_params (numpy)", gb / restore_s, "GB/s"))
        loader = weight_loaders.CheckpointWeightLoader(str(path))
        load_s = _median_s(lambda: loader.load(shapes), args.repeats)
        rows.append(("CheckpointWeightLoader.load", load_s, "s"))

    print(f"{'metric':<40} {'value':>12}  unit")
    for name, value, unit in rows:
        print(f"{name:<40} {value:>12.3f}  {unit}")
    result = {
        "name": "weights_io_bench",
        "full": args.full,
        "metrics": {name: {"value": value, "unit": unit} for name, value, unit in rows},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = RESULTS.with_suffix(".json.tmp")
    tmp_file.write_text(json.dumps(result, indent=2))
    tmp_file.replace(RESULTS)
    return result


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="weights_io_bench")
