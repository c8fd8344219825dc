"""Normalisation statistics: the `norm_stats.json` file, streaming statistics, and the two normalisations.

The file layout is openpi's, byte-for-byte in structure, so stats computed here load in openpi and stats
shipped with openpi checkpoints (`assets/<asset_id>/norm_stats.json`) load here::

    {"norm_stats": {"state": {"mean": [...], "std": [...], "q01": [...], "q99": [...]}, "actions": {...}}}

`q01`/`q99` may be absent or null in old files (z-score-only stats). Quantiles are estimated from a
per-dimension histogram with 5000 bins spanning ``[min - 1e-10, max + 1e-10]`` (openpi's choice), so they
are exact to within one bin width, ``(max - min) / 5000``, while mean and std are exact.
"""

from collections.abc import Mapping
import dataclasses
import json
import pathlib

import numpy as np

from openpi.shared import atomic
from openpi.shared import errors

NORM_STATS_FILENAME = "norm_stats.json"
# The folder of a checkpoint step that holds its norm stats, one subfolder per asset id (openpi's layout).
CHECKPOINT_ASSETS = "assets"
NUM_QUANTILE_BINS = 5000
# Padding of the histogram range beyond the observed min/max, so the extremes fall inside the end bins.
_RANGE_PAD = 1e-10
_EPS = 1e-6
_BLOCK_ROWS = 1 << 14


class NormStatsError(errors.UserError, ValueError):
    """A norm_stats.json file is malformed, or stats do not fit the data."""


class NormStatsNotFoundError(errors.UserError, FileNotFoundError):
    """No norm_stats.json where one was expected."""


@dataclasses.dataclass(frozen=True, eq=False)
class NormStats:
    """Per-dimension statistics of one data key (e.g. ``state`` or ``actions``); 1-D float arrays."""

    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray | None = None  # 1st percentile
    q99: np.ndarray | None = None  # 99th percentile

    def __post_init__(self):
        # Freeze the contents too: normalisers are shared between data-loader workers and the policy.
        for name in ("mean", "std", "q01", "q99"):
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.atleast_1d(np.array(value, dtype=np.float64))
            if arr.ndim != 1:
                raise NormStatsError(f"NormStats.{name} has shape {arr.shape}; stats hold one value per dim (1-D).")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        shapes = {n: getattr(self, n).shape for n in ("mean", "std", "q01", "q99") if getattr(self, n) is not None}
        if len(set(shapes.values())) != 1:
            raise NormStatsError(
                f"NormStats fields have different shapes {shapes}; every field needs one value per dim."
            )
        if (self.q01 is None) != (self.q99 is None):
            raise NormStatsError("NormStats has only one of q01/q99; give both quantiles or neither.")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[-1])

    @property
    def has_quantiles(self) -> bool:
        return self.q01 is not None

    def to_dict(self) -> dict[str, list[float] | None]:
        """The JSON-ready dict of openpi's schema (quantiles only when present)."""
        out: dict[str, list[float] | None] = {"mean": _tolist(self.mean), "std": _tolist(self.std)}
        if self.has_quantiles:
            out["q01"] = _tolist(self.q01)
            out["q99"] = _tolist(self.q99)
        return out

    def allclose(self, other: "NormStats", *, atol: float = 1e-6) -> bool:
        """Field-wise comparison (dataclass equality on arrays would be ambiguous)."""
        if self.has_quantiles != other.has_quantiles or self.mean.shape != other.mean.shape:
            return False
        names = ("mean", "std", "q01", "q99") if self.has_quantiles else ("mean", "std")
        return all(np.allclose(getattr(self, n), getattr(other, n), atol=atol, rtol=0) for n in names)


def _tolist(arr: np.ndarray) -> list[float]:
    # Python floats from float64 round-trip exactly through json (repr is shortest-exact).
    return [float(v) for v in np.asarray(arr, dtype=np.float64).reshape(-1)]


# ---------------------------------------------------------------------------------------------------------------------
# norm_stats.json


def serialize_json(norm_stats: Mapping[str, NormStats]) -> str:
    """openpi's schema, indented like openpi's file so diffs between the two stay readable."""
    return json.dumps({"norm_stats": {key: stats.to_dict() for key, stats in norm_stats.items()}}, indent=2)


def deserialize_json(text: str, *, source: str = "norm stats") -> dict[str, NormStats]:
    """Parses openpi's schema; ``source`` names the file in error messages."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise NormStatsError(
            f"{source} is not valid JSON ({e}); delete it and run scripts/compute_norm_stats.py."
        ) from e
    if not isinstance(raw, dict) or not isinstance(raw.get("norm_stats"), dict):
        raise NormStatsError(
            f"{source} has no top-level 'norm_stats' object; expected openpi's schema "
            '{"norm_stats": {"state": {"mean": [...], ...}}}, recompute it with scripts/compute_norm_stats.py.'
        )
    out = {}
    for key, fields in raw["norm_stats"].items():
        if not isinstance(fields, dict) or "mean" not in fields or "std" not in fields:
            raise NormStatsError(f"{source}: entry {key!r} lacks 'mean' or 'std'; recompute the stats.")
        try:
            out[key] = NormStats(
                mean=np.asarray(fields["mean"], dtype=np.float64),
                std=np.asarray(fields["std"], dtype=np.float64),
                q01=None if fields.get("q01") is None else np.asarray(fields["q01"], dtype=np.float64),
                q99=None if fields.get("q99") is None else np.asarray(fields["q99"], dtype=np.float64),
            )
        except NormStatsError as e:
            raise NormStatsError(f"{source}: entry {key!r}: {e}") from e
        except (TypeError, ValueError) as e:
            raise NormStatsError(f"{source}: entry {key!r} holds non-numeric values ({e}); recompute the stats.") from e
    return out


def save(directory: pathlib.Path | str, norm_stats: Mapping[str, NormStats]) -> pathlib.Path:
    """Writes ``<directory>/norm_stats.json`` atomically (temp file + rename); returns its path."""
    path = pathlib.Path(directory) / NORM_STATS_FILENAME
    atomic.write_text(path, serialize_json(norm_stats))
    return path


def load(directory: pathlib.Path | str) -> dict[str, NormStats]:
    """Reads ``<directory>/norm_stats.json`` (a path to the file itself is accepted too)."""
    path = pathlib.Path(directory)
    if path.name != NORM_STATS_FILENAME or path.is_dir():
        path = path / NORM_STATS_FILENAME
    if not path.is_file():
        raise NormStatsNotFoundError(
            f"Norm stats file not found at {path}; run `scripts/compute_norm_stats.py <config or dataset>` to create "
            "it, or copy the checkpoint's assets/<asset_id>/norm_stats.json there."
        )
    stats = deserialize_json(path.read_text(), source=str(path))
    check_finite(stats, source=str(path))
    check_ordered(stats, source=str(path))
    return stats


def load_assets(assets_dir: pathlib.Path | str) -> dict[str, dict[str, NormStats]]:
    """Every ``<assets_dir>/<asset_id>/norm_stats.json``, by asset id (none when the folder does not exist)."""
    assets_dir = pathlib.Path(assets_dir)
    if not assets_dir.is_dir():
        return {}
    return {sub.name: load(sub) for sub in sorted(assets_dir.iterdir()) if (sub / NORM_STATS_FILENAME).is_file()}


def load_step_norm_stats(step_dir: pathlib.Path | str, asset_id: str | None = None) -> dict[str, NormStats]:
    """Norm stats saved with a checkpoint step: ``<step_dir>/assets/<asset_id>/norm_stats.json`` (the only one if no
    id). Here rather than in `training.checkpoints` (which names it `restore_norm_stats`) because serving a checkpoint
    (`policies.policy_config`) reads them too, and the policies layer sits below training."""
    assets = load_assets(pathlib.Path(step_dir) / CHECKPOINT_ASSETS)
    if asset_id is None and len(assets) == 1:
        return next(iter(assets.values()))
    if asset_id not in assets:
        raise errors.CheckpointError(
            f"{step_dir} has no norm stats for asset {asset_id!r} (has {sorted(assets)}); pass one of those."
        )
    return assets[asset_id]


# ---------------------------------------------------------------------------------------------------------------------
# Streaming statistics


class RunningStats:
    """Streaming per-dimension mean/std (exact) and q01/q99 (histogram) over batches of vectors.

    Mean and variance are merged batch by batch in float64 with Chan's parallel formula, which is stable
    where openpi's mean-of-squares is not (large offsets such as joint angles in encoder ticks).
    Quantiles come from a ``num_bins`` histogram per dimension over the running ``[min, max]`` range. When a
    batch widens the range, the existing counts are re-spread onto the new bins assuming a uniform density
    inside each old bin (openpi moves each old bin's count to a single new bin, which is coarser). Feeding a
    whole column in one `update` call therefore gives quantiles exact to one bin width; so does passing the
    known overall ``value_range=(min, max)`` up front (a cheap first pass), however many batches follow.
    """

    def __init__(self, num_bins: int = NUM_QUANTILE_BINS, *, value_range: tuple[np.ndarray, np.ndarray] | None = None):
        if num_bins < 2:
            raise errors.ConfigError(f"RunningStats needs at least 2 histogram bins, got {num_bins}.")
        self._num_bins = int(num_bins)
        self._range = None
        if value_range is not None:
            lo, hi = (np.asarray(v, dtype=np.float64).reshape(-1) for v in value_range)
            if lo.shape != hi.shape or np.any(lo > hi):
                raise errors.ConfigError(f"RunningStats value_range needs min <= max per dim, got {lo} and {hi}.")
            self._range = (lo, hi)
        self._count = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self._min: np.ndarray | None = None
        self._max: np.ndarray | None = None
        self._lo: np.ndarray | None = None
        self._hi: np.ndarray | None = None
        self._hist: np.ndarray | None = None  # [D, num_bins] float64 counts

    @property
    def count(self) -> int:
        return self._count

    def update(self, batch: np.ndarray) -> None:
        """Adds a batch; all axes but the last are batch axes. NaN/inf are refused (they poison every stat)."""
        batch = np.asarray(batch)
        if batch.ndim == 0:
            raise NormStatsError("RunningStats.update got a scalar; pass an array whose last axis is the feature dim.")
        batch = batch.reshape(-1, batch.shape[-1])
        if batch.shape[0] == 0:
            return
        if self._mean is not None and batch.shape[1] != self._mean.size:
            raise NormStatsError(
                f"RunningStats got vectors of dim {batch.shape[1]} after vectors of dim {self._mean.size}; every "
                "batch of one key must have the same last dimension."
            )
        n = batch.shape[0]
        b_min = batch.min(axis=0).astype(np.float64)
        b_max = batch.max(axis=0).astype(np.float64)
        # NaN propagates through min/max and inf shows up in them, so this checks every value for free.
        if not (np.isfinite(b_min).all() and np.isfinite(b_max).all()):
            row, col = np.argwhere(~np.isfinite(batch))[0]
            raise NormStatsError(
                f"RunningStats got a non-finite value {batch[row, col]} (row {row} of this batch, dim {col}); clean "
                "the data (NaN or inf) before computing norm stats."
            )
        if self._count == 0:
            dim = batch.shape[1]
            self._mean, self._m2 = np.zeros(dim), np.zeros(dim)
            self._min, self._max = b_min, b_max
            lo, hi = b_min, b_max
            if self._range is not None:
                if self._range[0].shape != b_min.shape:
                    raise NormStatsError(
                        f"RunningStats value_range has {self._range[0].size} dims but the data has {b_min.size}."
                    )
                lo, hi = np.minimum(lo, self._range[0]), np.maximum(hi, self._range[1])
            self._lo, self._hi = lo - _RANGE_PAD, hi + _RANGE_PAD
            self._hist = np.zeros((dim, self._num_bins), dtype=np.float64)
        else:
            self._min = np.minimum(self._min, b_min)
            self._max = np.maximum(self._max, b_max)
            self._widen(self._min - _RANGE_PAD, self._max + _RANGE_PAD)
        # Row blocks keep the float64 temporaries cache-sized: on big columns this is several times faster
        # than whole-array temporaries (which spend their time in page faults).
        for start in range(0, n, _BLOCK_ROWS):
            block = batch[start : start + _BLOCK_ROWS].astype(np.float64, copy=False)
            self._merge_moments(block)
            self._add_to_histograms(block)

    def _merge_moments(self, block: np.ndarray) -> None:
        """Chan et al.'s pairwise update of count, mean and sum of squared deviations."""
        n = block.shape[0]
        b_mean = block.mean(axis=0)
        centered = block - b_mean
        b_m2 = np.einsum("ij,ij->j", centered, centered)
        total = self._count + n
        delta = b_mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = self._m2 + b_m2 + delta**2 * (self._count * n / total)
        self._count = total

    def get_statistics(self) -> NormStats:
        if self._count < 2:
            raise NormStatsError(
                f"Norm stats need at least 2 vectors, got {self._count}; check that the dataset is not empty."
            )
        std = np.sqrt(np.maximum(self._m2 / self._count, 0.0))
        q01, q99 = self.quantiles((0.01, 0.99))
        return NormStats(mean=self._mean.copy(), std=std, q01=q01, q99=q99)

    def quantiles(self, qs) -> list[np.ndarray]:
        """openpi's rule: the left edge of the first bin whose cumulative count reaches ``q * count``."""
        cdf = np.cumsum(self._hist, axis=1)
        width = (self._hi - self._lo) / self._num_bins
        out = []
        for q in qs:
            # Counts are floats after a re-spread; a tiny tolerance keeps exact integer targets on their bin.
            target = q * self._count - 1e-9 * self._count
            idx = (cdf < target).sum(axis=1)
            idx = np.minimum(idx, self._num_bins)
            out.append(self._lo + idx * width)
        return out

    def _scale(self) -> np.ndarray:
        """Bins per unit per dim; 0 for a degenerate (constant) dim, whose values all go to bin 0."""
        span = self._hi - self._lo
        return np.divide(self._num_bins, span, out=np.zeros_like(span), where=span > 0)

    def _add_to_histograms(self, block: np.ndarray) -> None:
        dim = block.shape[1]
        scale = self._scale()
        # Values lie inside [lo, hi], so truncation is floor; the max value may land on num_bins exactly.
        pos = block * scale
        pos -= self._lo * scale
        np.clip(pos, 0, self._num_bins - 1, out=pos)
        # One bincount over all dims at once: dim d's bins live at offset d * num_bins.
        pos += np.arange(dim) * self._num_bins
        flat = pos.astype(np.intp).reshape(-1)
        self._hist += np.bincount(flat, minlength=dim * self._num_bins).reshape(dim, self._num_bins)

    def _widen(self, lo: np.ndarray, hi: np.ndarray) -> None:
        lo, hi = np.minimum(lo, self._lo), np.maximum(hi, self._hi)
        changed = np.flatnonzero((lo < self._lo) | (hi > self._hi))
        for d in changed:
            new_edges = np.linspace(lo[d], hi[d], self._num_bins + 1)
            if self._hi[d] > self._lo[d]:
                old_edges = np.linspace(self._lo[d], self._hi[d], self._num_bins + 1)
                cdf = np.concatenate([[0.0], np.cumsum(self._hist[d])])
                # Piecewise-linear CDF of the old histogram evaluated at the new edges.
                self._hist[d] = np.diff(np.interp(new_edges, old_edges, cdf, left=0.0, right=cdf[-1]))
            else:  # a constant dim so far: all its counts sit at one value
                total = self._hist[d].sum()
                self._hist[d] = 0.0
                width = (hi[d] - lo[d]) / self._num_bins
                self._hist[d, min(int((self._lo[d] - lo[d]) / width), self._num_bins - 1)] = total
            self._lo[d], self._hi[d] = lo[d], hi[d]


def compute(batch: np.ndarray, num_bins: int = NUM_QUANTILE_BINS) -> NormStats:
    """Stats of one in-memory array ``[..., D]`` (a whole column at once)."""
    stats = RunningStats(num_bins)
    stats.update(batch)
    return stats.get_statistics()


# ---------------------------------------------------------------------------------------------------------------------
# Normalisation


def _field(stats: NormStats, name: str) -> np.ndarray:
    value = getattr(stats, name)
    if value is None:
        raise NormStatsError(
            f"These norm stats have no {name!r} (z-score-only stats); recompute them with "
            "scripts/compute_norm_stats.py or use z-score normalisation."
        )
    return value


def _split(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, int]:
    d = min(dim, x.shape[-1])
    return x[..., :d], x[..., d:], d


def normalize(x: np.ndarray, stats: NormStats, *, use_quantiles: bool = False) -> np.ndarray:
    """z-score ``(x - mean) / (std + 1e-6)`` or quantile ``(x - q01) / (q99 - q01 + 1e-6) * 2 - 1``.

    The stats are sliced to ``x``'s last dimension; dimensions of ``x`` beyond the stats (padding up to the
    model's action dim) pass through unchanged. The dtype of ``x`` is kept for floating inputs.
    """
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    head, tail, d = _split(x, stats.dim)
    if use_quantiles:
        lo, hi = _field(stats, "q01")[:d], _field(stats, "q99")[:d]
        head = (head - lo) / (hi - lo + _EPS) * 2.0 - 1.0
    else:
        head = (head - stats.mean[:d]) / (stats.std[:d] + _EPS)
    return np.concatenate([head.astype(dtype), tail.astype(dtype)], axis=-1)


def unnormalize(x: np.ndarray, stats: NormStats, *, use_quantiles: bool = False) -> np.ndarray:
    """Inverse of `normalize` on the first ``stats.dim`` dims; the rest pass through unchanged."""
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    head, tail, d = _split(x, stats.dim)
    if use_quantiles:
        lo, hi = _field(stats, "q01")[:d], _field(stats, "q99")[:d]
        head = (head + 1.0) / 2.0 * (hi - lo + _EPS) + lo
    else:
        head = head * (stats.std[:d] + _EPS) + stats.mean[:d]
    return np.concatenate([head.astype(dtype), tail.astype(dtype)], axis=-1)


def check_ordered(stats: Mapping[str, NormStats], *, source: str = "norm stats") -> None:
    """Refuses a negative std or q01 above q99: either would flip the sign of a dim's normalised values."""
    for key, s in stats.items():
        negative = np.flatnonzero(s.std < 0)
        if len(negative):
            d = int(negative[0])
            raise NormStatsError(
                f"{source}: {key!r}.std is {s.std[d]:g} at dim {d}; a standard deviation cannot be negative, so the "
                "file is corrupt or hand-edited: recompute it with scripts/compute_norm_stats.py."
            )
        if s.has_quantiles:
            crossed = np.flatnonzero(s.q01 > s.q99)
            if len(crossed):
                d = int(crossed[0])
                raise NormStatsError(
                    f"{source}: {key!r}.q01 is {s.q01[d]:g} above q99 {s.q99[d]:g} at dim {d}; the quantiles are "
                    "swapped or hand-edited: recompute them with scripts/compute_norm_stats.py."
                )


# Extra stats dims count as padding (openpi's stats of zero-padded data) when every field is this close to zero.
_PADDING_ATOL = 1e-6


def check_width(key: str, stats: NormStats, width: int, *, source: str | None = None) -> None:
    """Refuses stats whose width does not fit data of `width` dims under the padding rule, naming key and dims.

    The rule: the stats must be as wide as the data; wider stats are sliced to the data's dims only when the
    extra dims are padding (all fields zero: stats of zero-padded data, as openpi may ship). Narrower stats
    would normalise the leading dims and pass the rest through raw, so they are refused.
    """
    if stats.dim == width:
        return
    where = f"Norm stats for {key!r}" + (f" in {source}" if source else "")
    fix = (
        "recompute the stats for this data (scripts/compute_norm_stats.py <config>), or give the config its own "
        "asset id (assets.asset_id) if another dataset's stats were reused"
    )
    if stats.dim < width:
        raise NormStatsError(
            f"{where} have {stats.dim} dims but the data has {width}, so dims "
            f"{stats.dim}-{width - 1} would pass through unnormalised; {fix}."
        )
    fields = [getattr(stats, n) for n in ("mean", "std", "q01", "q99") if getattr(stats, n) is not None]
    if not all(np.all(np.abs(f[width:]) <= _PADDING_ATOL) for f in fields):
        raise NormStatsError(
            f"{where} have {stats.dim} dims but the data has {width}, and dims "
            f"{width}-{stats.dim - 1} are not padding (non-zero stats), so they describe other data; {fix}."
        )


# The keys every policy normalises. A value model normalises `state` only, and its stats files hold only that.
POLICY_KEYS = ("state", "actions")


def check_keys(stats: Mapping[str, NormStats], required: tuple[str, ...], *, source: str = "norm stats") -> None:
    """Refuses stats without an entry for each `required` key, naming the file and the key.

    `Normalize` skips a key it has no stats for, so a file without `actions` (a value config's state-only file
    shared through one asset folder, say) would train on raw actions and serve actions in model units.
    """
    missing = [k for k in required if k not in stats]
    if missing:
        raise NormStatsError(
            f"{source} has no {missing[0]!r} entry (it has {sorted(stats)}), so {missing[0]} would pass through "
            "unnormalised; recompute the norm stats for this config with scripts/compute_norm_stats.py <config> (a "
            "value config's stats hold 'state' only, so do not share its asset folder)."
        )


def check_finite(stats: Mapping[str, NormStats], *, source: str = "norm stats") -> None:
    """Refuses stats with NaN/inf (a corrupt file would otherwise silently produce NaN actions)."""
    for key, s in stats.items():
        for name in ("mean", "std", "q01", "q99"):
            value = getattr(s, name)
            if value is not None and not np.all(np.isfinite(value)):
                raise NormStatsError(f"{source}: {key}.{name} contains NaN or inf; recompute the stats.")


__all__ = [
    "NORM_STATS_FILENAME",
    "NUM_QUANTILE_BINS",
    "POLICY_KEYS",
    "NormStats",
    "NormStatsError",
    "NormStatsNotFoundError",
    "RunningStats",
    "check_finite",
    "check_keys",
    "check_ordered",
    "check_width",
    "compute",
    "deserialize_json",
    "load",
    "normalize",
    "save",
    "serialize_json",
    "unnormalize",
]
