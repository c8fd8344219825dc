import json

import matplotlib.image
import numpy as np
import pytest

from openpi.recap import advantage as adv
from openpi.relabel import report


def _synthetic(rng):
    """Six episodes over two tasks: successes, a failure, one with a correction, one demonstration."""
    lengths = [30, 40, 25, 35, 20, 30]
    tasks = [0, 0, 0, 1, 1, 1]
    succ = [True, True, False, True, False, True]
    reward, reward_label, intervention, task_index, values = [], [], [], [], []
    bounds, start = [], 0
    for ep, (n, task, ok) in enumerate(zip(lengths, tasks, succ, strict=True)):
        r = np.zeros(n, np.float32)
        r[-1] = 1.0 if ok else 0.0
        rl = np.full(n, -1.0 / 40, np.float32)
        rl[-1] = 0.0
        iv = np.zeros(n, np.int64)
        if ep == 1:
            iv[10:15] = 1  # a correction
        if ep == 5:
            iv[:] = 1  # demonstration only
        v = np.linspace(-0.8, -0.05 if ok else -0.9, n) + rng.normal(0, 0.02, n)
        reward.append(r)
        reward_label.append(rl)
        intervention.append(iv)
        task_index.append(np.full(n, task))
        values.append(v)
        bounds.append((start, start + n))
        start += n
    cat = np.concatenate
    return dict(
        reward=cat(reward),
        reward_label=cat(reward_label),
        intervention=cat(intervention),
        task_index=cat(task_index),
        values=cat(values),
        bounds=bounds,
    )


def test_write_report_numbers_and_pngs(tmp_path):
    data = _synthetic(np.random.default_rng(0))
    cfg = adv.AdvantageConfig(lookahead=5, top_percent=30)
    res = adv.compute(config=cfg, **data)
    names = {0: "pick up the vial", 1: "fold the towel"}
    out = report.write_report(
        tmp_path / "rep",
        result=res,
        values=data["values"],
        task_index=data["task_index"],
        intervention=data["intervention"],
        bounds=data["bounds"],
        episode_ids=[10, 11, 12, 13, 14, 15],
        task_names=names,
        config=cfg,
        extra={"source": "synthetic"},
    )
    on_disk = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(out))
    assert on_disk["source"] == "synthetic"
    t0, t1 = on_disk["tasks"]
    assert t0["task"] == "pick up the vial" and t0["episodes"] == 3 and t0["successful_episodes"] == 2
    assert t0["frames"] == 95 and t0["human_frames"] == 5 and t0["autonomous_frames"] == 90
    assert t0["positive_autonomous"] == 27  # round(0.3 * 90)
    assert t0["positive_fraction_autonomous"] == pytest.approx(0.3)
    # Task 1: 55 autonomous frames (episode 5 is a demonstration) -> round(16.5) = 17 positive, plus 30 human frames.
    assert t1["autonomous_frames"] == 55 and t1["human_frames"] == 30 and t1["positive_autonomous"] == 17
    assert t1["positive_fraction_all"] == pytest.approx((17 + 30) / 85)
    assert t0["threshold"] == pytest.approx(res.thresholds[0])
    assert t0["advantage"]["min"] <= t0["advantage"]["p50"] <= t0["advantage"]["max"]
    assert on_disk["totals"]["frames"] == 180 and on_disk["totals"]["successful_episodes"] == 4
    # Histograms per task and one value plot with two successes and two failures... only two failures exist.
    assert on_disk["plots"] == ["advantage_hist_task000.png", "advantage_hist_task001.png", "values_episodes.png"]
    assert on_disk["plotted_episodes"] == [10, 11, 12, 14]
    for name in on_disk["plots"]:
        img = matplotlib.image.imread(tmp_path / "rep" / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert not list((tmp_path / "rep").glob("*.tmp"))

    table = report.format_table(on_disk)
    assert "pick up the vial" in table and "fold the towel" in table
    assert "30.0" in table  # task 0 positive percentage
    assert table.splitlines()[-1].startswith("total")


def test_pick_episodes_alternates_success_and_failure():
    res = adv.AdvantageResult(
        advantage=np.zeros(6),
        adv_ind=np.array(["positive"] * 6, dtype=object),
        thresholds={},
        rewards=np.zeros(6, np.float32),
        success=np.array([True, True, True, False, False, True]),
    )
    bounds = [(i, i + 1) for i in range(6)]
    intervention = np.array([0, 0, 1, 0, 0, 0])
    assert report.pick_episodes(res, intervention, bounds, count=3) == [0, 1, 3]
    assert report.pick_episodes(res, intervention, bounds, count=10) == [0, 1, 3, 4, 5]
