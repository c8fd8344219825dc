import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import optimize

from openpi.sim import metrics


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        (8, 10, (0.4902, 0.9433)),
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (50, 100, (0.4038, 0.5962)),
        (1, 1, (0.2065, 1.0)),
    ],
)
def test_wilson_interval_known_values(successes, n, expected):
    low, high = metrics.wilson_interval(successes, n)
    assert (round(low, 4), round(high, 4)) == expected


@pytest.mark.parametrize(("successes", "n", "z"), [(3, 7, 1.96), (17, 40, 1.0), (99, 100, 2.576), (1, 30, 1.645)])
def test_wilson_interval_is_where_the_score_test_stops_rejecting(successes, n, z):
    """The Wilson bounds are the p at which |p_hat - p| = z * sqrt(p (1 - p) / n); found here by root search."""
    p_hat = successes / n

    def score(p):
        return abs(p_hat - p) - z * math.sqrt(p * (1 - p) / n)

    low, high = metrics.wilson_interval(successes, n, z=z)
    assert low == pytest.approx(optimize.brentq(score, 1e-12, p_hat), abs=1e-9)
    assert high == pytest.approx(optimize.brentq(score, p_hat, 1 - 1e-12), abs=1e-9)


def test_wilson_interval_edge_cases():
    assert metrics.wilson_interval(0, 0) == (0.0, 1.0)
    for n in (1, 2, 5, 1000):
        assert metrics.wilson_interval(0, n)[0] == 0.0
        assert metrics.wilson_interval(n, n)[1] == 1.0
        for k in range(0, n + 1, max(1, n // 7)):
            low, high = metrics.wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0
    # More episodes, narrower interval; higher z, wider interval.
    assert np.diff(metrics.wilson_interval(80, 100)) < np.diff(metrics.wilson_interval(8, 10))
    assert np.diff(metrics.wilson_interval(8, 10, z=2.576)) > np.diff(metrics.wilson_interval(8, 10))
    with pytest.raises(ValueError, match="between 0 and n=10"):
        metrics.wilson_interval(11, 10)
    with pytest.raises(ValueError, match="between 0 and n=10"):
        metrics.wilson_interval(-1, 10)
    with pytest.raises(ValueError, match="n=-1"):
        metrics.wilson_interval(0, -1)
    with pytest.raises(ValueError, match="z must be positive"):
        metrics.wilson_interval(1, 2, z=0)


def _results():
    R = metrics.EpisodeResult
    return [
        R("press_red", 0, True, 20, interventions=1, human_steps=5),
        R("press_red", 1, True, 30),
        R("press_red", 2, False, 100, interventions=2, human_steps=25),
        R("press_red", 3, True, 40, interventions=1, human_steps=10),
        R("stack", 0, False, 80),
        R("stack", 1, False, 80, interventions=3, human_steps=40),
    ]


def test_summarize_hand_made_results():
    summary = metrics.summarize(_results())
    assert list(summary["tasks"]) == ["press_red", "stack"]
    red = summary["tasks"]["press_red"]
    assert red["episodes"] == 4 and red["successes"] == 3
    assert red["success_rate"] == 0.75
    assert red["ci95"] == list(metrics.wilson_interval(3, 4))
    assert red["mean_steps_to_success"] == 30.0  # (20 + 30 + 40) / 3; the failure's 100 steps are left out
    assert red["interventions_per_episode"] == 1.0
    assert red["human_step_fraction"] == pytest.approx(40 / 190)

    stack = summary["tasks"]["stack"]
    assert stack["success_rate"] == 0.0 and stack["mean_steps_to_success"] is None
    assert stack["ci95"][0] == 0.0
    assert stack["interventions_per_episode"] == 1.5 and stack["human_step_fraction"] == 0.25

    overall = summary["overall"]
    assert overall["episodes"] == 6 and overall["successes"] == 3 and overall["success_rate"] == 0.5
    assert overall["mean_steps_to_success"] == 30.0
    assert overall["interventions_per_episode"] == pytest.approx(7 / 6)
    assert overall["human_step_fraction"] == pytest.approx(80 / 350)
    assert json.loads(json.dumps(summary)) == summary  # ready for the evaluation report


def test_summarize_refuses_nothing_and_results_refuse_bad_counts():
    with pytest.raises(ValueError, match="at least one EpisodeResult"):
        metrics.summarize([])
    with pytest.raises(ValueError, match="human_steps=12; it must lie between 0 and steps=10"):
        metrics.EpisodeResult("t", 3, True, 10, human_steps=12)
    with pytest.raises(ValueError, match="steps=-1"):
        metrics.EpisodeResult("t", 3, True, -1)
    with pytest.raises(ValueError, match="interventions=-2"):
        metrics.EpisodeResult("t", 3, True, 5, interventions=-2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        metrics.EpisodeResult("t", 0, True, 5).steps = 6
    # Zero-step episodes (complete at reset) do not divide by zero.
    assert metrics.summarize([metrics.EpisodeResult("t", 0, True, 0)])["overall"]["human_step_fraction"] == 0.0


def test_format_table_rows_per_arm_and_task():
    baseline = metrics.summarize(_results())
    recap = metrics.summarize([metrics.EpisodeResult("press_red", s, True, 25) for s in range(10)])
    table = metrics.format_table({"baseline": baseline, "recap": recap})
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["arm", "task", "episodes", "success"]
    assert set(lines[1]) <= {"-", " "}
    body = lines[2:]
    # baseline: two tasks plus its overall row; recap: one task, so no overall row.
    assert [line.split()[:2] for line in body] == [
        ["baseline", "press_red"],
        ["baseline", "stack"],
        ["baseline", metrics.ALL_TASKS],
        ["recap", "press_red"],
    ]
    assert "75.0% (3/4)" in body[0] and "[30.1, 95.4]" in body[0] and "30.0" in body[0]
    assert "0.0% (0/2)" in body[1] and " - " in body[1]
    assert "100.0% (10/10)" in body[3] and "[72.2, 100.0]" in body[3]
    assert len({len(line) for line in lines}) == 1  # columns line up
    with pytest.raises(ValueError, match="arm 'x' is not a summarize"):
        metrics.format_table({"x": baseline["overall"]})


def test_plot_success_writes_a_png(tmp_path):
    image = pytest.importorskip("matplotlib.image")

    def run(rate_out_of_10: int):
        return metrics.summarize([metrics.EpisodeResult("press_red", s, s < rate_out_of_10, 30) for s in range(10)])

    series = {
        "recap": [(2, run(7)), (0, run(3)), (1, run(5))],  # unordered on purpose
        "baseline": [(0, run(3)["tasks"]["press_red"]), (1, run(3)), (2, run(4))],
    }
    path = metrics.plot_success(series, tmp_path / "plots" / "success.png", title="press_red: success vs iteration")
    assert path == tmp_path / "plots" / "success.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    pixels = image.imread(path)
    assert pixels.shape[:2] == (450, 900)  # 9 x 4.5 inches at 100 dpi (the legend sits right of the axes)
    assert pixels[..., :3].std() > 0.05  # something was drawn, not a blank canvas
    assert [p.name for p in path.parent.iterdir()] == ["success.png"]  # no temporary file left behind

    with pytest.raises(ValueError, match="at least one"):
        metrics.plot_success({"recap": []}, tmp_path / "empty.png", title="t")
    with pytest.raises(ValueError, match="x=0 of arm 'recap' is not a summarize"):
        metrics.plot_success({"recap": [(0, {"rate": 1.0})]}, tmp_path / "bad.png", title="t")


def _episodes(outcomes, task="press_red"):
    return [metrics.EpisodeResult(task, seed, bool(ok), 5) for seed, ok in enumerate(outcomes)]


@pytest.mark.parametrize(("a_only", "b_only"), [(0, 0), (3, 0), (9, 2), (20, 11), (1, 30)])
def test_paired_comparison_is_the_exact_mcnemar_test(a_only, b_only):
    from scipy import stats

    both, neither = 7, 5
    a = [1] * a_only + [0] * b_only + [1] * both + [0] * neither
    b = [0] * a_only + [1] * b_only + [1] * both + [0] * neither
    result = metrics.paired_comparison(_episodes(a), _episodes(b))
    assert (result["a_only"], result["b_only"], result["pairs"]) == (a_only, b_only, len(a))
    assert (result["a_successes"], result["b_successes"]) == (a_only + both, b_only + both)
    assert result["difference"] == pytest.approx((a_only - b_only) / len(a))
    expected = 1.0 if a_only + b_only == 0 else stats.binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert result["p_value"] == pytest.approx(expected, rel=1e-9)


def test_paired_comparison_pairs_by_task_and_seed_not_by_order():
    a = _episodes([1, 0, 1])
    b = list(reversed(_episodes([1, 0, 1])))
    assert metrics.paired_comparison(a, b)["a_only"] == 0
    assert metrics.paired_comparison(a, b)["b_only"] == 0


def test_paired_comparison_refuses_arms_on_different_episodes():
    with pytest.raises(ValueError, match="same \\(task, seed\\) episodes"):
        metrics.paired_comparison(_episodes([1, 0, 1]), _episodes([1, 0]))
    with pytest.raises(ValueError, match="two episodes of task 'press_red' with seed 0"):
        metrics.paired_comparison(_episodes([1]) * 2, _episodes([1]) * 2)


def test_combined_paired_comparison_pools_the_discordant_pairs_of_every_seed():
    # Seeds with (a only, b only) = (3, 1), (2, 0), (1, 1) on 10 layouts each: 6 against 2 of 8 discordant pairs,
    # two-sided P(X <= 2 or X >= 6) for X ~ Bin(8, 1/2) = 2 (1 + 8 + 28) / 256.
    per_seed = [metrics.paired_comparison(_episodes([1] * a + [0] * b + [1] * 4 + [0] * (6 - a - b)),
                                          _episodes([0] * a + [1] * b + [1] * 4 + [0] * (6 - a - b)))
                for a, b in ((3, 1), (2, 0), (1, 1))]  # fmt: skip
    combined = metrics.combined_paired_comparison(per_seed)
    assert (combined["strata"], combined["pairs"], combined["a_only"], combined["b_only"]) == (3, 30, 6, 2)
    assert combined["p_value"] == pytest.approx(74 / 256)
    assert combined["difference"] == pytest.approx(4 / 30) and combined["differences"] == pytest.approx([0.2, 0.2, 0.0])
    # One seed alone is its own McNemar test.
    assert metrics.combined_paired_comparison(per_seed[:1])["p_value"] == per_seed[0]["p_value"]
    with pytest.raises(ValueError, match="at least one"):
        metrics.combined_paired_comparison([])


def test_concordance_auc_by_hand():
    # Two-level truth: positives score 0.35 and 0.8, negatives 0.1 and 0.4; 3 of the 4 pairs ordered right.
    assert metrics.concordance_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert metrics.concordance_auc([0.5, 0.5], [0, 1]) == 0.5  # a score tie counts half
    # Graded truth: of the five pairs whose truths differ, items (1, 2), (1, 3), (2, 4) are ordered right and (1, 4),
    # (2, 3) wrong; items 3 and 4 tie in truth and are not compared.
    assert metrics.concordance_auc([1, 2, 3, 0], [10, 30, 20, 20]) == pytest.approx(3 / 5)
    # Groups: only pairs inside a group count (one right, one wrong); across groups all four would be compared.
    assert metrics.concordance_auc([1, 0, 0, 1], [1, 0, 1, 0], groups=["a", "a", "b", "b"]) == 0.5
    assert metrics.concordance_auc([1, 2], [3, 3]) is None
    with pytest.raises(ValueError, match="NaN"):
        metrics.concordance_auc([np.nan, 1], [0, 1])


def test_plot_success_draws_every_seed(tmp_path):
    image = pytest.importorskip("matplotlib.image")

    def run(rate_out_of_10: int):
        return metrics.summarize([metrics.EpisodeResult("press_red", s, s < rate_out_of_10, 30) for s in range(10)])

    series = {"recap": [(1, run(3)), (1, run(5)), (2, run(6)), (2, run(8))], "bc": [(1, run(2))]}
    path = metrics.plot_success(series, tmp_path / "seeds.png", title="seeds")
    assert image.imread(path)[..., :3].std() > 0.05
