"""The RECAP-vs-BC experiment end to end at toy budget: every arm trains, is served and evaluated, and the loop
collects through the served RECAP policy, merges, relabels and retrains (openpi.sim.experiment)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from openpi.datasets import lerobot
from openpi.sim import experiment


def test_toy_experiment_runs_every_arm_and_iteration(tmp_path):
    budget = experiment.BUDGETS["toy"]
    config = experiment.ExperimentConfig(out_dir=tmp_path / "run", budget=budget, tasks=("press_red", "press_blue"))
    results = experiment.run(config)

    # Every arm was evaluated on its own evaluation seeds, per task, with Wilson intervals.
    expected = {"bc": ["1"], "filtered_bc": ["1"], "recap": ["1", "2"], "recap_cfg1.5": ["1"], "recap_none": ["1", "2"],
                "recap_negative": ["1", "2"], "bc_same_data": ["2"]}  # fmt: skip
    assert {arm: sorted(by_iter) for arm, by_iter in results["arms"].items()} == expected
    seeds = sorted((e["task"], e["seed"]) for e in results["arms"]["bc"]["1"]["episodes"])
    assert len(set(seeds)) == 2 * budget.eval_per_task
    for by_iter in results["arms"].values():
        for summary in by_iter.values():
            overall = summary["overall"]
            assert overall["episodes"] == 2 * budget.eval_per_task
            assert 0.0 <= overall["ci95"][0] <= overall["success_rate"] <= overall["ci95"][1] <= 1.0
            assert set(summary["tasks"]) == {"press_red", "press_blue"}
            # Every episode is stored, on the same seeds for every arm, and its record rebuilds the summary.
            assert sorted((e["task"], e["seed"]) for e in summary["episodes"]) == seeds
            assert sum(e["success"] for e in summary["episodes"]) == overall["successes"]
            assert all(e["outcome"] in ("success", "wrong_button", "timeout") for e in summary["episodes"])

    # Paired tests between the arms, recomputable from the stored episodes.
    expected_pairs = {"recap_it1 vs bc_it1", "recap_it2 vs bc_it1", "recap_it1 vs filtered_bc_it1",
                      "recap_it2 vs filtered_bc_it1", "recap_it2 vs recap_it1", "recap_it2 vs bc_same_data_it2",
                      "recap_cfg1.5_it1 vs recap_it1", "recap_it1 vs recap_none_it1", "recap_it2 vs recap_none_it2",
                      "recap_it1 vs recap_negative_it1", "recap_it2 vs recap_negative_it2"}  # fmt: skip
    assert set(results["paired"]) == expected_pairs
    for pair in results["paired"].values():
        assert pair["pairs"] == 2 * budget.eval_per_task and 0.0 <= pair["p_value"] <= 1.0

    # Iteration 2 collected through the served policy and merged with everything before it.
    it0 = lerobot.LeRobotDataset.open(tmp_path / "run" / "data" / "it0")
    merged = lerobot.LeRobotDataset.open(tmp_path / "run" / "data" / "merged_it2")
    collected = results["data"]["it1_collected"]["episodes"]
    assert collected == 2 * budget.collect_per_task
    assert merged.num_episodes == it0.num_episodes + collected

    # The relabelled data carry both labels on autonomous frames and only `positive` on human frames.
    relabelled = lerobot.LeRobotDataset.open(tmp_path / "run" / "data" / "relabelled_it2")
    labels = np.asarray(relabelled.column("adv_ind")).reshape(-1)
    human = np.asarray(relabelled.column("intervention")).reshape(-1) == 1
    assert set(labels[human]) == {"positive"}
    assert {"positive", "negative"} <= set(labels[~human])
    diag = results["labels"]["2"]
    assert diag["autonomous_frames"] == int((~human).sum())
    assert 0.0 <= diag["clean_fraction_of_positive"] <= 1.0
    for grade in ("takeover_fraction", "progress_gain", "steps_left"):
        assert all(np.isfinite(diag[f"{grade}_of_{k}"]) for k in ("positive", "negative")), grade
    assert -1.0 <= results["value"]["1"]["spearman_vs_return"] <= 1.0

    # The outputs a person reads.
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["arms"].keys() == results["arms"].keys()
    assert (tmp_path / "run" / "success_vs_iteration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "recap_cfg1.5" in (tmp_path / "run" / "table.txt").read_text()
    assert "McNemar p" in (tmp_path / "run" / "table.txt").read_text()

    # A run made before the indicator ablation gets it afterwards from its own checkpoints, exactly as the run
    # itself evaluated them (deterministic training and noise drawn per observation).
    older = {**saved, "arms": {k: v for k, v in saved["arms"].items() if k not in ("recap_none", "recap_negative")}}
    (tmp_path / "run" / "results.json").write_text(json.dumps(older))
    redone = experiment.add_indicator_ablation(tmp_path / "run")
    for arm in ("recap_none", "recap_negative"):
        assert redone["arms"][arm] == saved["arms"][arm]
    assert redone["paired"] == saved["paired"] and redone["labels"] == saved["labels"]


def test_filtered_bc_keeps_successes_and_the_corrections_of_failures():
    ep = experiment._rollout.Episode(
        task="t", prompt="p", seed=0, images={}, states=[np.zeros(2)] * 6, actions=[np.full(3, i, np.float32) for i in range(6)],
        intervention=[0, 1, 1, 0, 1, 0], clean=[0, 1, 1, 0, 1, 0], success=False,
    )  # fmt: skip
    good = dataclasses.replace(ep, success=True)
    out = experiment.filtered_for_bc([good, ep])
    assert out[0] is good
    assert [[int(a[0]) for a in e.actions] for e in out[1:]] == [[1, 2], [4]]
    assert all(all(e.intervention) for e in out[1:])


def test_label_grades_on_two_hand_made_episodes():
    # Episode 1: positive, positive, negative, human (takeover), human. Episode 2: negative, positive.
    grades = experiment.grade_labels(
        labels=np.array(["positive", "positive", "negative", "positive", "positive", "negative", "positive"]),
        human=np.array([0, 0, 0, 1, 1, 0, 0], bool),
        clean=np.array([1, 0, 0, 1, 1, 1, 1], bool),
        progress=np.array([-1.0, -0.8, -0.7, -0.5, 0.0, -1.0, -0.4]),
        episode_ends=[5, 7],
        lookahead=1,
    )
    assert grades["autonomous_frames"] == 5 and grades["positive_frames"] == 3
    assert grades["clean_fraction_of_positive"] == 2 / 3 and grades["clean_fraction_of_negative"] == 0.5
    # Only the negative at frame 2 is followed (within one frame) by the operator's takeover.
    assert grades["takeover_fraction_of_positive"] == 0.0 and grades["takeover_fraction_of_negative"] == 0.5
    # Gains: frame 0 +0.2, frame 1 +0.1, frame 2 +0.2, frame 5 +0.6; frame 6 ends its episode (no gain).
    assert np.isclose(grades["progress_gain_of_positive"], 0.15)
    assert np.isclose(grades["progress_gain_of_negative"], 0.4)
    assert grades["steps_left_of_positive"] == (4 + 3 + 0) / 3 and grades["steps_left_of_negative"] == (2 + 1) / 2
