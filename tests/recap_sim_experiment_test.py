"""The RECAP-vs-BC experiment end to end at toy budget: every arm trains, is served and evaluated, and the loop
collects through the served RECAP policy, merges, relabels and retrains (openpi.sim.experiment)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from openpi.datasets import lerobot
from openpi.sim import experiment


def test_toy_experiment_runs_every_arm_and_iteration(tmp_path):
    budget = experiment.BUDGETS["toy"]
    config = experiment.ExperimentConfig(out_dir=tmp_path / "run", budget=budget, tasks=("press_red", "press_blue"),
                                         train_seeds=(0, 1))  # fmt: skip
    results = experiment.run(config)

    # Every arm of every training seed was evaluated on the same evaluation seeds, per task, with Wilson intervals.
    expected = {"bc": ["1"], "filtered_bc": ["1"], "recap": ["1", "2"], "recap_cfg1.5": ["1"], "recap_none": ["1", "2"],
                "recap_negative": ["1", "2"], "recap_shuffled": ["1", "2"], "recap_oracle": ["1", "2"],
                "bc_same_data": ["2"]}  # fmt: skip
    assert {arm: sorted(by_iter) for arm, by_iter in results["arms"].items()} == expected
    assert list(results["seed_arms"]) == ["1"]
    assert {arm: sorted(by_iter) for arm, by_iter in results["seed_arms"]["1"].items()} == expected
    seeds = sorted((e["task"], e["seed"]) for e in results["arms"]["bc"]["1"]["episodes"])
    assert len(set(seeds)) == 2 * budget.eval_per_task
    for by_iter in [*results["arms"].values(), *results["seed_arms"]["1"].values()]:
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
                      "recap_it1 vs recap_negative_it1", "recap_it2 vs recap_negative_it2",
                      "recap_it1 vs recap_shuffled_it1", "recap_it2 vs recap_shuffled_it2",
                      "recap_it1 vs recap_oracle_it1", "recap_it2 vs recap_oracle_it2"}  # fmt: skip
    assert set(results["paired"]) == set(results["seed_paired"]["1"]) == set(results["combined"]) == expected_pairs
    for pair in [*results["paired"].values(), *results["seed_paired"]["1"].values()]:
        assert pair["pairs"] == 2 * budget.eval_per_task and 0.0 <= pair["p_value"] <= 1.0
    # One test over both training seeds: their discordant pairs pooled.
    for name, combined in results["combined"].items():
        per_seed = [results["paired"][name], results["seed_paired"]["1"][name]]
        assert combined["strata"] == 2 and combined["pairs"] == 2 * 2 * budget.eval_per_task
        assert combined["a_only"] == sum(p["a_only"] for p in per_seed)
        assert combined["differences"] == [p["difference"] for p in per_seed]

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
    # The controls' labels: shuffled keeps RECAP's positive share per task, the oracle's follow the simulator's truth.
    for iteration in ("1", "2"):
        relabelled = lerobot.LeRobotDataset.open(tmp_path / "run" / "data" / f"relabelled_it{iteration}")
        human = np.asarray(relabelled.column("intervention")).reshape(-1) == 1
        task = np.asarray(relabelled.column("task_index")).reshape(-1)
        truth = experiment.action_truth(experiment.make_envs(config), relabelled.root)
        assert np.isfinite(truth[~human]).all() and np.isnan(truth[human]).all()
        control = {}
        for arm in ("recap_oracle", "recap_shuffled"):
            root = tmp_path / "run" / "data" / f"{arm}_it{iteration}"
            control[arm] = np.asarray(lerobot.LeRobotDataset.open(root).column("adv_ind")).reshape(-1)
        oracle = experiment.oracle_labels(
            truth, task, human, budget.top_percent, experiment.control_seed(config, int(iteration))
        )
        assert list(control["recap_oracle"]) == list(oracle)
        labels = np.asarray(relabelled.column("adv_ind")).reshape(-1)
        for t in np.unique(task):
            auto = ~human & (task == t)
            assert (control["recap_shuffled"][auto] == "positive").sum() == (labels[auto] == "positive").sum()
        for arm in control:
            assert set(control[arm][human]) == {"positive"}
        grades = results["control_labels"][iteration]["recap_oracle"]
        assert grades["true_advantage_of_positive"] >= grades["true_advantage_of_negative"]
        assert 0.0 <= results["labels"][iteration]["advantage_auc_vs_truth"] <= 1.0

    # The value grades: the fixed held-out set, and the seeded 10 % of the merged episodes the value model never saw
    # (its state norm stats, computed by the trainer over its training episodes only, are those of the other 90 %).
    for iteration in ("1", "2"):
        fixed, merged_grades = (results["value"][iteration][k] for k in ("fixed_heldout", "merged_heldout"))
        assert -1.0 <= fixed["spearman_vs_return"] <= 1.0 and fixed["loss_trained"] is None
        assert np.isfinite(merged_grades["loss_trained"]) and np.isfinite(merged_grades["loss_heldout"])
    it0_data = lerobot.LeRobotDataset.open(tmp_path / "run" / "data" / "it0")
    trained_on, heldout = experiment.value_split(config, it0_data.num_episodes)
    assert len(heldout) == 1 and results["value"]["1"]["merged_heldout"]["episodes"] == 1
    states = np.asarray(it0_data.column("observation.state"), np.float32)
    saved = json.loads(next((tmp_path / "run" / "checkpoints" / "value" / "it1").glob("*/assets/*/norm_stats.json"))
                       .read_text())["norm_stats"]["state"]  # fmt: skip
    kept = states[np.concatenate([np.arange(it0_data.episodes[e].from_index, it0_data.episodes[e].to_index)
                                  for e in trained_on])]  # fmt: skip
    assert np.allclose(saved["mean"], kept.mean(0), atol=1e-5) and not np.allclose(saved["mean"], states.mean(0))

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


def _two_hand_made_episodes() -> dict:
    """Episode 1: positive, positive, negative, human (takeover), human. Episode 2: negative, positive."""
    return {
        "labels": np.array(["positive", "positive", "negative", "positive", "positive", "negative", "positive"]),
        "human": np.array([0, 0, 0, 1, 1, 0, 0], bool),
        "clean": np.array([1, 0, 0, 1, 1, 1, 1], bool),
        "progress": np.array([-1.0, -0.8, -0.7, -0.5, 0.0, -1.0, -0.4]),
        "episode_ends": [5, 7],
        "lookahead": 1,
    }


def test_label_grades_on_two_hand_made_episodes():
    grades = experiment.grade_labels(**_two_hand_made_episodes())
    assert grades["autonomous_frames"] == 5 and grades["positive_frames"] == 3
    assert grades["clean_fraction_of_positive"] == 2 / 3 and grades["clean_fraction_of_negative"] == 0.5
    # Only the negative at frame 2 is followed (within one frame) by the operator's takeover.
    assert grades["takeover_fraction_of_positive"] == 0.0 and grades["takeover_fraction_of_negative"] == 0.5
    # Gains: frame 0 +0.2, frame 1 +0.1, frame 2 +0.2, frame 5 +0.6; frame 6 ends its episode (no gain).
    assert np.isclose(grades["progress_gain_of_positive"], 0.15)
    assert np.isclose(grades["progress_gain_of_negative"], 0.4)
    assert grades["steps_left_of_positive"] == (4 + 3 + 0) / 3 and grades["steps_left_of_negative"] == (2 + 1) / 2


def test_label_grades_against_the_simulators_truth_by_hand():
    # The episodes of the test above, with each autonomous frame's true advantage and the relabeller's advantage.
    grades = experiment.grade_labels(
        **_two_hand_made_episodes(),
        task_index=np.zeros(7, np.int64),
        advantage=np.array([0.3, 0.1, -0.2, np.nan, np.nan, 0.0, 0.2]),
        true_advantage=np.array([0.0, -0.06, -0.06, np.nan, np.nan, 0.0, -0.02]),
    )
    assert grades["true_advantage_of_positive"] == pytest.approx((0.0 - 0.06 - 0.02) / 3)
    assert grades["true_advantage_of_negative"] == pytest.approx((-0.06 + 0.0) / 2)
    # Of the 8 pairs of autonomous frames whose truths differ, two are ordered the wrong way: frames 1 and 5, 5 and 6.
    assert grades["advantage_auc_vs_truth"] == 0.75


def test_true_advantage_rebuilds_the_tabletop_from_seed_and_state():
    env = experiment._tabletop.TabletopEnv("press_red")
    env.reset(3)
    red, green = env.buttons[0], env.buttons[1]
    start = env.gripper.copy()  # at least 0.25 from every button: the expert moves the full 0.06 toward red
    near = red + np.array([0.02, 0.0])  # inside the press radius (0.04): the expert presses, reaching the target

    def at(gripper):
        return np.array([*gripper, 0.0])

    def to(point, press=-1.0):
        return np.array([*(point * 2 - 1), press], np.float32)

    frames = [  # (gripper, action, autonomous)
        (start, to(red), True),  # heads for red like the expert: as good
        (start, to(start), True),  # stays put: 0.06 short of the expert
        (start, np.array([0.0, 0.0, 1.0], np.float32), True),  # presses the bare table: 0.06 short
        (near, to(red), True),  # moves onto the centre (0.02): as good as the expert's press
        (near, to(near, 1.0), True),  # presses: a success, as good
        (near, to(near), True),  # stays put: 0.02 short of the success
        (green, to(green, 1.0), True),  # presses green: a failure, the arena's worst progress
        (start, to(red), False),  # a human frame is not graded
    ]
    truth = experiment.true_advantage(
        [env] * len(frames),
        seeds=np.full(len(frames), 3),
        states=np.stack([at(g) for g, _, _ in frames]).astype(np.float32),
        actions=np.stack([a for _, a, _ in frames]),
        autonomous=np.array([auto for _, _, auto in frames]),
    )
    wrong = np.linalg.norm(green - red) - np.sqrt(2.0) - 0.06
    assert truth[:7] == pytest.approx([0.0, -0.06, -0.06, 0.0, 0.0, -0.02, wrong], abs=1e-6)
    assert np.isnan(truth[7])


def test_oracle_labels_take_the_relabellers_share_per_task_with_ties_drawn():
    truth = np.array([-0.1, 0.0, 0.0, -0.05, np.nan, 0.0, -0.2, -0.3])
    task = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    human = np.array([0, 0, 0, 0, 1, 0, 0, 0], bool)
    drawn = set()
    for seed in range(8):
        labels = experiment.oracle_labels(truth, task, human, top_percent=40.0, seed=seed)
        assert labels[4] == "positive"  # human
        # Task 0: 2 of its 5 autonomous frames (40 %), both among the three equally best; task 1: 1 of 2.
        positives = {i for i in (0, 1, 2, 3, 5) if labels[i] == "positive"}
        assert len(positives) == 2 and positives <= {1, 2, 5}
        assert (labels[6], labels[7]) == ("positive", "negative")
        assert list(experiment.oracle_labels(truth, task, human, 40.0, seed)) == list(labels)
        drawn.add(frozenset(positives))
    assert len(drawn) > 1  # the tie is broken by the seed, not by frame order


def test_shuffled_labels_keep_each_tasks_positive_share():
    labels = np.array(["positive", "negative", "negative", "positive", "negative", "positive", "positive", "negative",
                       "negative"], object)  # fmt: skip
    task = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    human = np.array([0, 0, 0, 0, 0, 1, 0, 0, 0], bool)
    arrangements = set()
    for seed in range(8):
        out = experiment.shuffled_labels(labels, task, human, seed)
        assert out[5] == "positive"
        assert sorted(out[[0, 1, 2, 3, 4]]) == sorted(labels[[0, 1, 2, 3, 4]])
        assert sorted(out[[6, 7, 8]]) == sorted(labels[[6, 7, 8]])
        assert list(experiment.shuffled_labels(labels, task, human, seed)) == list(out)
        arrangements.add(tuple(out))
    assert len(arrangements) > 1


def test_value_grades_on_hand_made_episodes():
    # Held out: episode 1 (4 frames, success) and episode 2 (3 frames, failure); episode 3 (2 frames) trained on.
    nan = np.nan
    grades = experiment.grade_values(
        values=np.array([0.4, 0.5, 0.6, 0.7, 0.1, 0.3, 0.2, nan, nan]),
        loss=np.array([1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 0.5, nan]),
        target=np.array([-0.4, -0.3, -0.2, -0.1, -0.9, -0.8, -0.7, -0.5, -0.4]),
        progress=np.array([-0.5, -0.4, -0.3, -0.2, -0.6, -0.1, -0.35, -0.3, -0.2]),
        success=np.array([0, 0, 0, 1, 0, 0, 0, 0, 1], bool),
        episode_ends=[4, 7, 9],
        heldout=np.array([True, True, False]),
        steps_before_end=1,
    )
    assert (grades["episodes"], grades["frames"]) == (2, 7)
    # Value ranks 4-7 | 1, 3, 2 against return ranks 4-7 | 1, 2, 3: sum d^2 = 2, rho = 1 - 6 * 2 / (7 * 48).
    assert grades["spearman_vs_return"] == pytest.approx(1 - 12 / 336)
    # Progress ranks 2, 3, 5, 6 | 1, 7, 4: sum d^2 = 36.
    assert grades["progress_spearman_vs_return"] == pytest.approx(1 - 216 / 336)
    # Inside the episodes: 1.0 and (ranks 1, 3, 2 of 3) 0.5, for the value and for the progress alike.
    assert grades["mean_episode_spearman_vs_neg_steps_to_go"] == pytest.approx(0.75)
    assert grades["progress_mean_episode_spearman_vs_neg_steps_to_go"] == pytest.approx(0.75)
    # One step before the end: the success's frame 2 against the failure's frame 5.
    assert grades["success_auc_1_before_end"] == 1.0  # 0.6 > 0.3
    assert grades["progress_success_auc_1_before_end"] == 0.0  # -0.3 < -0.1
    assert grades["loss_trained"] == 0.5 and grades["loss_heldout"] == pytest.approx(10 / 7)


def test_toy_experiment_runs_on_metaworld_with_recap_on_pi0(tmp_path):
    """`--env metaworld` at toy budget: the pi0 policy with the advantage clause (continuous state, no state bins),
    the same arms as the tabletop, the oracle at iteration 1 only (MetaWorld cannot rebuild a frame's state from its
    seed; its truth is the scripted policy's clean flag, which a learned policy's frames never carry). A run made
    without the oracle gets it afterwards, exactly as the run trains and evaluates it."""
    pytest.importorskip("metaworld", reason="MetaWorld is not installed (uv sync --extra sim).")
    from openpi.training import config as _config

    config = experiment.config_for_env("metaworld", tmp_path / "run", experiment.BUDGETS["toy"])
    assert config.tasks == ("push-v3",)
    policy, bc = (_config.get_config(name).model for name in (config.policy_config, config.bc_config))
    assert (policy.model_type, bc.model_type) == ("pi0_recap", "pi0")
    assert not policy.discrete_state_input and not bc.discrete_state_input
    results = experiment.run(config)

    assert set(results["arms"]) == {"bc", "filtered_bc", "recap", "recap_cfg1.5", "recap_none", "recap_negative",
                                    "recap_shuffled", "recap_oracle", "bc_same_data"}  # fmt: skip
    assert set(results["arms"]["recap_oracle"]) == {"1"} and set(results["arms"]["recap_shuffled"]) == {"1", "2"}
    assert "recap_it1 vs recap_oracle_it1" in results["paired"]
    # The oracle's positives are clean wherever enough autonomous frames are (its truth is the clean flag).
    oracle_grades = results["control_labels"]["1"]["recap_oracle"]
    assert oracle_grades["true_advantage_of_positive"] >= oracle_grades["true_advantage_of_negative"]
    truth = experiment.clean_truth(tmp_path / "run" / "data" / "relabelled_it1")
    it1 = lerobot.LeRobotDataset.open(tmp_path / "run" / "data" / "relabelled_it1")
    human = np.asarray(it1.column("intervention")).reshape(-1) == 1
    clean = np.asarray(it1.column("sim.clean_action")).reshape(-1) == 1
    assert np.isnan(truth[human]).all() and (truth[~human] == np.where(clean[~human], 0.0, -1.0)).all()
    assert 0.0 <= results["labels"]["1"]["advantage_auc_vs_truth"] <= 1.0
    episodes = results["arms"]["recap"]["2"]["episodes"]
    assert {e["task"] for e in episodes} == {"push-v3"} and len(episodes) == experiment.BUDGETS["toy"].eval_per_task
    relabelled = lerobot.LeRobotDataset.open(tmp_path / "run" / "data" / "relabelled_it2")
    labels = np.asarray(relabelled.column("adv_ind")).reshape(-1)
    assert {"positive", "negative"} <= set(labels)
    assert results["labels"]["2"].get("advantage_auc_vs_truth") is None

    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    older = {**saved, "arms": {k: v for k, v in saved["arms"].items() if k != "recap_oracle"},
             "control_labels": {"1": {"recap_shuffled": saved["control_labels"]["1"]["recap_shuffled"]},
                                "2": saved["control_labels"]["2"]}}  # fmt: skip
    (tmp_path / "run" / "results.json").write_text(json.dumps(older))
    redone = experiment.add_label_oracle(tmp_path / "run")
    assert redone["arms"]["recap_oracle"] == saved["arms"]["recap_oracle"]
    assert redone["paired"] == saved["paired"] and redone["control_labels"] == saved["control_labels"]
