"""Relabelling throughput: frames/s of value inference over a synthetic LeRobot dataset (decode + model).

Runs the real pipeline (`openpi.recap.relabel.relabel`: data loader workers decoding video, the jitted value model,
the per-episode cache, the dataset writer and the report) with freshly initialised weights, so no checkpoint is
needed. Steady-state frames/s is measured from the end of the first batch (compilation) to the end of the last.

    uv run benchmarks/relabel_bench.py                       # CPU: tiny value model (value_demo size), 64 px
    uv run benchmarks/relabel_bench.py --full                # GPU: SigLIP So400m/14 + Gemma3-270M at 224 px

Anchor: the community labeller relabels ~21k frames in 10-12 min at batch 8 on a 24 GB GPU (~30-35 frames/s).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import tempfile
import time

import tyro

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "relabel_bench.json"


@dataclasses.dataclass(frozen=True)
class Args:
    full: bool = False
    """Full-size value model (value_yam_vial_30fps) at 224 px; needs a GPU to be quick."""
    episodes: int | None = None
    """Synthetic episodes (default 24 on CPU, 96 with --full)."""
    batch_size: int | None = None
    """Inference batch (default 32 on CPU, 64 with --full)."""
    num_workers: int = 4
    lookahead: int = 10
    params_from_host: bool = False
    """Pass host (numpy) params into every inference call, as the labeller did before issue 14.11 (for comparison);
    default: `relabel.make_values_fn`, which puts them on the device once."""


def main(args: Args) -> dict:
    import jax
    import numpy as np

    from openpi.datasets import synthetic
    from openpi.recap import relabel
    from openpi.shared import testing
    from openpi.training import value_config
    from openpi.training import value_data
    from openpi.training import value_train

    cfg = value_config.get_config("value_yam_vial_30fps" if args.full else "value_demo")
    model = cfg.model
    image_size = model.image_resolution[0]
    episodes = args.episodes or (96 if args.full else 24)
    batch_size = args.batch_size or (64 if args.full else 32)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        tok = testing.train_tiny_sentencepiece(tmp / "tokenizer.model", extra_symbols=testing.GEMMA3_SYMBOLS)
        data_root = tmp / "data"
        synthetic.write_dataset(
            data_root, synthetic.SyntheticConfig(num_episodes=episodes, image_size=image_size, max_length=40)
        )
        # As `value_train.load_value_checkpoint` returns them: numpy arrays on the host.
        params = jax.device_get(jax.jit(model.init_params)(jax.random.key(0)))
        predict = (
            (lambda batch: value_train.predict_values(model, params, batch))
            if args.params_from_host
            else relabel.make_values_fn(model, params)
        )
        data = dataclasses.replace(cfg.data, repo_id=str(data_root))
        factory = value_data.ValueItemFactory(data, model, None, str(tok), with_targets=False)
        calls: list[tuple[float, int]] = []

        def values_fn(batch):
            out = np.asarray(predict(batch))
            calls.append((time.perf_counter(), len(out)))
            return out

        config = relabel.RelabelConfig(
            data_dir=str(data_root),
            checkpoint_dir="(fresh init)",
            output_dir=str(tmp / "out"),
            batch_size=batch_size,
            lookahead=args.lookahead,
            num_workers=args.num_workers,
            progress=False,
        )
        t0 = time.perf_counter()
        res = relabel.relabel(config, model=(factory, values_fn, {"bench": True}))
        total_s = time.perf_counter() - t0
        steady = (sum(n for _, n in calls[1:]) / (calls[-1][0] - calls[0][0])) if len(calls) > 1 else float("nan")
        result = {
            "device": str(jax.devices()[0]),
            "model": "full (So400m/14 + Gemma3-270M)" if args.full else "tiny (mu/16 + dummy Gemma3)",
            "image_px": image_size,
            "cameras": len(data.cameras),
            "batch_size": batch_size,
            "params": "host, every batch" if args.params_from_host else "on device once",
            "num_workers": args.num_workers,
            "frames_scored": res.stats["frames_total"],
            "dataset_frames": len(res.values),
            "steady_frames_per_s": steady,
            "end_to_end_frames_per_s": res.stats["frames_total"] / total_s,
            "total_s": total_s,
            "inference_s": res.stats["inference_s"],
        }
    print(f"{'metric':<26} value")
    for k, v in result.items():
        print(f"{k:<26} {v:.2f}" if isinstance(v, float) else f"{k:<26} {v}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = RESULTS.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(result, indent=2) + "\n")
    tmp_path.replace(RESULTS)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
