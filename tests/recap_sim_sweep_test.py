"""The RECAP sensitivity sweep end to end at toy budget (openpi.sim.sweep): one value model and one relabelling per
`top_percent`, one pi0.6 per (top_percent, dropout), every arm evaluated on the same validation seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from openpi.datasets import lerobot
from openpi.shared import errors
from openpi.sim import experiment
from openpi.sim import gate
from openpi.sim import sweep


def test_toy_sweep_trains_every_setting_and_pairs_it_with_the_default(tmp_path):
    budget = experiment.BUDGETS["toy"]
    config = experiment.ExperimentConfig(out_dir=tmp_path / "run", budget=budget, tasks=("press_red",))
    results = sweep.run(sweep.SweepConfig(config, top_percents=(10.0, 30.0), dropouts=(0.3,), bc_reference=False))

    assert list(results["arms"]) == ["recap_top10_drop0.3", "recap_top30_drop0.3"]
    for summary in results["arms"].values():
        # The validation range, never the evaluation seeds the experiment reports.
        assert sorted(e["seed"] for e in summary["episodes"]) == [gate.VALIDATION_SEED + k for k in range(2)]
    assert set(results["paired"]) == {"recap_top10_drop0.3 vs recap_top30_drop0.3"}

    # Each top_percent relabelled the same values with its own threshold: fewer positives at 10 % than at 30 %.
    def positives(top: str) -> int:
        ds = lerobot.LeRobotDataset.open(tmp_path / "run" / "data" / f"relabelled_top{top}")
        labels = np.asarray(ds.column("adv_ind")).reshape(-1)
        human = np.asarray(ds.column("intervention")).reshape(-1) == 1
        return int((labels[~human] == "positive").sum())

    assert positives("10") < positives("30")
    assert results["labels"]["10"]["positive_frames"] == positives("10")
    # Both relabellings read one value cache: the values were inferred once.
    assert len(list((tmp_path / "run" / "cache" / "relabel").iterdir())) == 1

    # The settings reached the relabeller and the trainer of each arm.
    assert results["arms"]["recap_top10_drop0.3"]["settings"] == {"top_percent": 10.0, "indicator_dropout": 0.3}
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["arms"].keys() == results["arms"].keys()
    assert "recap_top10_drop0.3" in (tmp_path / "run" / "table.txt").read_text()


def test_the_sweep_refuses_settings_without_the_default(tmp_path):
    config = experiment.ExperimentConfig(out_dir=tmp_path / "run", budget=experiment.BUDGETS["toy"])
    with pytest.raises(errors.ConfigError, match="include both values"):
        sweep.run(sweep.SweepConfig(config, top_percents=(10.0,), dropouts=(0.3,)))
