import json
import os
import pathlib

import numpy as np
import pytest

from openpi.shared import errors
from openpi.shared import normalize


def _reference(x: np.ndarray) -> dict[str, np.ndarray]:
    x = np.sort(x.reshape(-1, x.shape[-1]).astype(np.float64), axis=0)
    n = x.shape[0]
    return {
        "mean": x.mean(0),
        "std": x.std(0),
        # The order statistics the histogram rule targets: the ceil(q * n)-th smallest value.
        "k01": x[int(np.ceil(0.01 * n)) - 1],
        "k99": x[int(np.ceil(0.99 * n)) - 1],
        "q01": np.quantile(x, 0.01, axis=0),
        "q99": np.quantile(x, 0.99, axis=0),
        "bin": (x[-1] - x[0]) / normalize.NUM_QUANTILE_BINS,
    }


def _assert_matches_reference(stats: normalize.NormStats, x: np.ndarray, *, bins: float = 1.0) -> None:
    ref = _reference(x)
    np.testing.assert_allclose(stats.mean, ref["mean"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(stats.std, ref["std"], rtol=0, atol=1e-6)
    tol = bins * ref["bin"] + 1e-9
    for q in ("01", "99"):
        got = getattr(stats, f"q{q}")
        # Histogram quantiles: the left edge of the bin holding the order statistic, so at most one bin below it.
        # (After re-spreading a histogram the estimate may also land a few bins above.)
        assert np.all(got <= ref[f"k{q}"] + (bins - 1) * ref["bin"] + 1e-9), q
        assert np.all(got >= ref[f"k{q}"] - tol), q
        # And numpy's interpolated quantile lies within the same bin width plus the gap to the next sample.
        assert np.all(np.abs(got - ref[f"q{q}"]) <= 2 * tol), q


def test_single_update_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.normal(3.0, 2.0, (20000, 3)), rng.exponential(1.0, (20000, 2)), rng.uniform(-1, 1, (20000, 2))], axis=1
    ).astype(np.float32)
    _assert_matches_reference(normalize.compute(x), x)


def test_streaming_updates_with_growing_range_stay_accurate():
    rng = np.random.default_rng(1)
    # Each batch widens the range: the histogram is re-spread several times.
    batches = [rng.normal(0, 0.5 * (i + 1), (4000, 4)) + i for i in range(6)]
    stats = normalize.RunningStats()
    for b in batches:
        stats.update(b[:, None, :].repeat(1, axis=1))  # extra batch axis: flattened like openpi
    x = np.concatenate(batches)
    assert stats.count == x.shape[0]
    _assert_matches_reference(stats.get_statistics(), x, bins=3.0)


def test_large_offset_is_numerically_stable():
    rng = np.random.default_rng(2)
    x = 1e6 + rng.normal(0, 1e-2, (10000, 2))
    stats = normalize.RunningStats()
    for chunk in np.array_split(x, 7):
        stats.update(chunk)
    np.testing.assert_allclose(stats.get_statistics().std, x.std(0), rtol=1e-6)


def test_quantile_rule_on_hand_made_data():
    # Values 0..99 in 50 bins of width ~1.98: bin i holds the values in [1.98 i, 1.98 (i + 1)).
    x = np.arange(100, dtype=np.float64)[:, None]
    stats = normalize.compute(x, num_bins=50)
    lo, width = -1e-10, (99 + 2e-10) / 50
    # 1% of 100 = 1 value: reached in bin 0, whose left edge is the padded minimum.
    np.testing.assert_allclose(stats.q01, [lo], atol=1e-12)
    # 99% of 100 = 99 values: bins 0..48 hold 0..97 (98 values), so bin 49 (98 and 99) reaches it.
    np.testing.assert_allclose(stats.q99, [lo + 49 * width], atol=1e-9)


def test_constant_dimension():
    x = np.full((50, 2), 7.0)
    stats = normalize.compute(x)
    np.testing.assert_allclose(stats.mean, [7, 7])
    np.testing.assert_allclose(stats.std, [0, 0], atol=1e-12)
    np.testing.assert_allclose(stats.q01, [7, 7], atol=1e-9)
    np.testing.assert_allclose(stats.q99, [7, 7], atol=1e-9)


def test_running_stats_refuses_bad_input():
    stats = normalize.RunningStats()
    with pytest.raises(normalize.NormStatsError, match="at least 2 vectors"):
        stats.get_statistics()
    stats.update(np.zeros((3, 4)))
    with pytest.raises(normalize.NormStatsError, match="dim 5 after vectors of dim 4"):
        stats.update(np.zeros((3, 5)))
    bad = np.zeros((3, 4))
    bad[2, 1] = np.nan
    with pytest.raises(normalize.NormStatsError, match=r"row 2 of this batch, dim 1"):
        stats.update(bad)
    assert issubclass(normalize.NormStatsError, errors.UserError)


def test_save_load_roundtrip_in_openpi_schema(tmp_path: pathlib.Path):
    rng = np.random.default_rng(3)
    stats = {
        "state": normalize.compute(rng.normal(size=(100, 14))),
        "actions": normalize.compute(rng.normal(size=(100, 7))),
    }
    path = normalize.save(tmp_path / "assets" / "yam", stats)
    assert path == tmp_path / "assets" / "yam" / "norm_stats.json"
    raw = json.loads(path.read_text())
    assert list(raw) == ["norm_stats"]
    assert set(raw["norm_stats"]) == {"state", "actions"}
    assert list(raw["norm_stats"]["state"]) == ["mean", "std", "q01", "q99"]
    assert len(raw["norm_stats"]["actions"]["q99"]) == 7
    loaded = normalize.load(tmp_path / "assets" / "yam")
    for key in stats:
        # Exact: float64 values survive JSON unchanged.
        for name in ("mean", "std", "q01", "q99"):
            np.testing.assert_array_equal(getattr(loaded[key], name), getattr(stats[key], name))
        assert loaded[key].allclose(stats[key], atol=0)
    # The path of the file itself also works.
    assert set(normalize.load(path)) == {"state", "actions"}
    assert [p.name for p in path.parent.iterdir()] == ["norm_stats.json"]


def test_load_openpi_file_without_quantiles(tmp_path: pathlib.Path):
    (tmp_path / "norm_stats.json").write_text(
        json.dumps({"norm_stats": {"state": {"mean": [1.0, 2.0], "std": [0.5, 0.25], "q01": None, "q99": None}}})
    )
    (stats,) = normalize.load(tmp_path).values()
    assert not stats.has_quantiles
    np.testing.assert_allclose(normalize.normalize(np.array([2.0, 2.0]), stats), [1.0 / (0.5 + 1e-6), 0.0])
    with pytest.raises(normalize.NormStatsError, match="no 'q01'"):
        normalize.normalize(np.zeros(2), stats, use_quantiles=True)


def test_load_errors_name_the_file(tmp_path: pathlib.Path):
    with pytest.raises(normalize.NormStatsNotFoundError, match=r"compute_norm_stats\.py"):
        normalize.load(tmp_path / "missing")
    assert issubclass(normalize.NormStatsNotFoundError, FileNotFoundError)
    bad = tmp_path / "norm_stats.json"
    bad.write_text("{not json")
    with pytest.raises(normalize.NormStatsError, match="not valid JSON"):
        normalize.load(tmp_path)
    bad.write_text(json.dumps({"state": {"mean": [0.0]}}))
    with pytest.raises(normalize.NormStatsError, match="top-level 'norm_stats'"):
        normalize.load(tmp_path)
    bad.write_text(json.dumps({"norm_stats": {"state": {"mean": [0.0]}}}))
    with pytest.raises(normalize.NormStatsError, match="'state' lacks 'mean' or 'std'"):
        normalize.load(tmp_path)
    bad.write_text(json.dumps({"norm_stats": {"state": {"mean": [0.0, 1.0], "std": [1.0]}}}))
    with pytest.raises(normalize.NormStatsError, match="different shapes"):
        normalize.load(tmp_path)


def test_load_refuses_negative_std_and_crossed_quantiles(tmp_path: pathlib.Path):
    """Issue 20: a negative std flips the sign of a dim, q01 > q99 flips the quantile range; both used to load."""
    good = {"mean": [0.0, 1.0], "std": [1.0, 0.0], "q01": [-1.0, 1.0], "q99": [1.0, 1.0]}
    (tmp_path / "norm_stats.json").write_text(json.dumps({"norm_stats": {"state": good}}))
    normalize.load(tmp_path)  # a constant dim (std 0, q01 == q99) is fine
    for field, value, match in (
        ("std", [1.0, -0.5], r"'state'.std is -0.5 at dim 1; a standard deviation cannot be negative"),
        ("q01", [-1.0, 2.0], r"'state'.q01 is 2 above q99 1 at dim 1"),
    ):
        (tmp_path / "norm_stats.json").write_text(json.dumps({"norm_stats": {"state": {**good, field: value}}}))
        with pytest.raises(normalize.NormStatsError, match=rf"{tmp_path}/norm_stats.json: {match}.*compute_norm_stats"):
            normalize.load(tmp_path)


def test_save_is_atomic(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    good = {"state": normalize.NormStats(mean=np.zeros(2), std=np.ones(2), q01=-np.ones(2), q99=np.ones(2))}
    normalize.save(tmp_path, good)
    before = (tmp_path / "norm_stats.json").read_text()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    other = {"state": normalize.NormStats(mean=np.ones(2), std=np.ones(2))}
    with pytest.raises(OSError, match="disk full"):
        normalize.save(tmp_path, other)
    assert (tmp_path / "norm_stats.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["norm_stats.json"]


def test_normalize_formulas_and_inverse():
    stats = normalize.NormStats(
        mean=np.array([1.0, -2.0, 0.5]),
        std=np.array([2.0, 0.5, 1.0]),
        q01=np.array([-1.0, 0.0, 10.0]),
        q99=np.array([3.0, 1.0, 20.0]),
    )
    x = np.array([[3.0, -1.0, 0.5], [1.0, -2.0, 15.0]], dtype=np.float32)
    z = normalize.normalize(x, stats)
    np.testing.assert_allclose(z[0], [2 / (2 + 1e-6), 1 / (0.5 + 1e-6), 0.0], rtol=1e-6)
    q = normalize.normalize(x, stats, use_quantiles=True)
    np.testing.assert_allclose(
        q[1], [2 / (4 + 1e-6) * 2 - 1, -2 / (1 + 1e-6) * 2 - 1, 5 / (10 + 1e-6) * 2 - 1], rtol=1e-6
    )
    assert z.dtype == np.float32 and q.dtype == np.float32
    for use_q in (False, True):
        back = normalize.unnormalize(normalize.normalize(x, stats, use_quantiles=use_q), stats, use_quantiles=use_q)
        np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-5)


def test_stats_are_sliced_and_padding_passes_through():
    stats = normalize.NormStats(mean=np.arange(4.0), std=np.ones(4), q01=np.zeros(4), q99=np.full(4, 2.0))
    # Data narrower than the stats: stats sliced to the data's dim.
    np.testing.assert_allclose(normalize.normalize(np.array([1.0, 1.0]), stats), [1 / (1 + 1e-6), 0.0], rtol=1e-6)
    # Data wider (model padding to action_dim): extra dims unchanged both ways.
    x = np.concatenate([np.ones((5, 4)), np.full((5, 3), 9.0)], axis=1)
    for use_q in (False, True):
        y = normalize.normalize(x, stats, use_quantiles=use_q)
        np.testing.assert_array_equal(y[:, 4:], 9.0)
        np.testing.assert_array_equal(normalize.unnormalize(y, stats, use_quantiles=use_q)[:, 4:], 9.0)


def test_norm_stats_is_frozen():
    stats = normalize.NormStats(mean=[0.0, 1.0], std=[1.0, 1.0])
    with pytest.raises(AttributeError):
        stats.mean = np.zeros(2)  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        stats.mean[0] = 3.0
    with pytest.raises(normalize.NormStatsError, match="only one of q01/q99"):
        normalize.NormStats(mean=[0.0], std=[1.0], q01=[0.0])


def test_known_range_keeps_streamed_quantiles_exact_to_one_bin():
    rng = np.random.default_rng(4)
    batches = [rng.normal(0, 1 + i, (3000, 3)) for i in range(5)]
    x = np.concatenate(batches)
    stats = normalize.RunningStats(value_range=(x.min(0), x.max(0)))
    for b in batches:
        stats.update(b)
    _assert_matches_reference(stats.get_statistics(), x)
    with pytest.raises(errors.ConfigError, match="min <= max"):
        normalize.RunningStats(value_range=(np.ones(2), np.zeros(2)))


def test_constant_dims_at_large_magnitude_then_widened():
    # 1e6 - 1e-10 == 1e6 in float64: the histogram range collapses to a point and must not produce NaN bins.
    x = np.full((100, 2), 1e6)
    stats = normalize.compute(x)
    np.testing.assert_allclose(stats.q01, [1e6, 1e6], rtol=0, atol=1e-9)
    np.testing.assert_allclose(stats.q99, [1e6, 1e6], rtol=0, atol=1e-9)
    running = normalize.RunningStats()
    running.update(x)
    y = np.stack([np.linspace(1e6 - 50, 1e6 + 50, 10000), np.full(10000, 1e6)], axis=1)
    running.update(y)
    _assert_matches_reference(running.get_statistics(), np.concatenate([x, y]), bins=2.0)


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_load_refuses_non_finite_stats(tmp_path: pathlib.Path, bad: str):
    """Issue 14.5: a corrupt file with NaN/inf must not load silently (it would give NaN actions)."""
    fields = '"mean": [0.0, BAD], "std": [1.0, 1.0], "q01": [0, 0], "q99": [1, 1]'.replace("BAD", bad)
    text = '{"norm_stats": {"state": {' + fields + "}}}"
    (tmp_path / normalize.NORM_STATS_FILENAME).write_text(text)
    with pytest.raises(normalize.NormStatsError, match=r"state\.mean contains NaN or inf"):
        normalize.load(tmp_path)
