"""Per-episode feature statistics in LeRobot's layout, and their aggregation into dataset stats.

LeRobot keeps, for every numeric feature of every episode, `min`, `max`, `mean`, `std`, `count` and (v3.0)
the quantiles `q01 q10 q50 q90 q99`; camera stats are per channel on pixels scaled to [0, 1], shaped
[3, 1, 1]. The writer stores them in meta/episodes (v3.0) or meta/episodes_stats.jsonl (v2.1), and the
dataset-level meta/stats.json is their aggregate: count-weighted mean, pooled variance, min of mins, max
of maxes and count-weighted mean of the quantiles (an approximation, as in LeRobot). Normalisation stats
for training are computed elsewhere (`openpi.shared.normalize`); these exist so that LeRobot tools and
viewers see a complete dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
# Camera stats look at up to this many frames per episode, subsampled to about this many pixels per side.
_MAX_IMAGE_FRAMES = 100
_IMAGE_SIDE = 64

Stats = dict[str, np.ndarray]


def feature_stats(values: np.ndarray, *, with_quantiles: bool = True) -> Stats:
    """Stats over the leading (frame) axis of a numeric [T] or [T, D] array."""
    values = np.asarray(values)
    data = values.reshape(len(values), -1).astype(np.float64)
    keep_int = np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_
    stats: Stats = {
        "min": data.min(axis=0).astype(np.int64) if keep_int else data.min(axis=0),
        "max": data.max(axis=0).astype(np.int64) if keep_int else data.max(axis=0),
        "mean": data.mean(axis=0),
        "std": data.std(axis=0),
        "count": np.array([len(values)], dtype=np.int64),
    }
    if with_quantiles:
        for name, q in QUANTILES.items():
            stats[name] = np.quantile(data, q, axis=0)
    return stats


def image_stats(frames: np.ndarray, *, with_quantiles: bool = True) -> Stats:
    """Per-channel stats of uint8 [T, H, W, C] frames scaled to [0, 1], each shaped [C, 1, 1]."""
    frames = np.asarray(frames)
    if len(frames) > _MAX_IMAGE_FRAMES:
        frames = frames[np.linspace(0, len(frames) - 1, _MAX_IMAGE_FRAMES).round().astype(int)]
    step = max(1, max(frames.shape[1:3]) // _IMAGE_SIDE)
    pixels = frames[:, ::step, ::step, :].reshape(-1, frames.shape[-1]).astype(np.float64) / 255.0
    stats = feature_stats(pixels, with_quantiles=with_quantiles)
    out = {k: (v.reshape(-1, 1, 1) if k != "count" else v) for k, v in stats.items()}
    out["min"], out["max"] = out["min"].astype(np.float64), out["max"].astype(np.float64)
    out["count"] = np.array([len(frames)], dtype=np.int64)
    return out


def aggregate(per_episode: Sequence[Mapping[str, Stats]]) -> dict[str, Stats]:
    """Dataset stats from per-episode stats (features missing from some episodes use the others)."""
    keys: dict[str, None] = {}
    for episode in per_episode:
        keys.update(dict.fromkeys(episode))
    result = {}
    for key in keys:
        parts = [episode[key] for episode in per_episode if key in episode]
        counts = np.array([float(np.asarray(p["count"]).reshape(-1)[0]) for p in parts])
        total = counts.sum()
        weights = counts / total if total > 0 else np.full(len(parts), 1.0 / len(parts))
        means = np.stack([np.asarray(p["mean"], dtype=np.float64) for p in parts])
        w = weights.reshape((-1,) + (1,) * (means.ndim - 1))
        mean = (w * means).sum(axis=0)
        variances = np.stack([np.asarray(p["std"], dtype=np.float64) ** 2 for p in parts])
        variance = (w * (variances + (means - mean) ** 2)).sum(axis=0)
        agg: Stats = {
            "min": np.min(np.stack([np.asarray(p["min"]) for p in parts]), axis=0),
            "max": np.max(np.stack([np.asarray(p["max"]) for p in parts]), axis=0),
            "mean": mean,
            "std": np.sqrt(np.maximum(variance, 0.0)),
            "count": np.array([int(total)], dtype=np.int64),
        }
        for name in QUANTILES:
            if all(name in p for p in parts):
                agg[name] = (w * np.stack([np.asarray(p[name], dtype=np.float64) for p in parts])).sum(axis=0)
        result[key] = agg
    return result


def to_json(stats: Mapping[str, Stats]) -> dict[str, dict[str, Any]]:
    return {key: {name: np.asarray(v).tolist() for name, v in s.items()} for key, s in stats.items()}
