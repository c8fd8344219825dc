"""The learnability gate at toy size: demonstrations under every prompt, one arm trained with the real trainer,
served and evaluated closed-loop on the seeds it was told (openpi.sim.gate, benchmarks/sim_gate_bench.py)."""

from __future__ import annotations

import numpy as np

from openpi.datasets import lerobot
from openpi.sim import experiment
from openpi.sim import gate
from openpi.sim import metrics


def test_toy_gate_trains_serves_and_evaluates_on_the_chosen_seeds(tmp_path):
    tasks = ("press_red", "press_blue")
    config = gate.GateConfig(out_dir=tmp_path / "gate", layouts=2, eval_per_task=1, batch_size=8, tasks=tasks,
                             eval_seed=gate.VALIDATION_SEED, num_clients=1)  # fmt: skip
    arm = gate.Arm(name="posemb", model=(("siglip_posemb", "sincos2d"),), train=(("num_train_steps", 2),))
    results = gate.run(config, [arm])

    # Every layout was demonstrated under each chosen task's prompt, from the same seeds.
    data = lerobot.LeRobotDataset.open(tmp_path / "gate" / "data" / "demos")
    assert data.num_episodes == 4 == results["demonstrations"]["episodes"]
    assert sorted(data.tasks.values()) == ["press the blue button", "press the red button"]
    seeds = np.asarray(data.column("sim.seed")).reshape(-1)
    for task_index in np.unique(np.asarray(data.column("task_index"))):
        assert set(seeds[np.asarray(data.column("task_index")) == task_index]) == {0, 1}

    (record,) = results["arms"]
    assert (
        record["arm"] == "posemb"
        and record["steps"] == 2
        and record["model_overrides"] == {"siglip_posemb": "sincos2d"}
    )
    assert record["episodes"] == 2 and 0 <= record["successes"] <= 2
    low, high = record["ci95"]
    assert (low, high) == metrics.wilson_interval(record["successes"], record["episodes"])
    assert 0.0 <= low <= record["success_rate"] <= high <= 1.0
    assert record["train_seconds"] > 0
    # The trained checkpoint is the arm's config, with the override applied.
    ckpt = tmp_path / "gate" / "checkpoints" / "sim_pi05" / "posemb"
    assert any(ckpt.iterdir())
    assert "posemb" in gate.table(results)
    # Evaluation used the validation block (task i from VALIDATION_SEED + 10,000 i), never the evaluation seeds.
    records = record["episode_records"]
    assert sorted((r["task"], r["seed"]) for r in records) == sorted(
        (task, gate.VALIDATION_SEED + 10_000 * i) for i, task in enumerate(tasks)
    )
    assert all(r["seed"] < experiment.EVAL_SEED for r in records)
    assert sum(r["success"] for r in records) == record["successes"]


def test_toy_gate_runs_on_metaworld_from_state(tmp_path):
    config = gate.GateConfig(out_dir=tmp_path / "gate", env="metaworld", layouts=2, eval_per_task=1, batch_size=8,
                             tasks=("push-v3",), eval_seed=gate.VALIDATION_SEED, num_clients=1)  # fmt: skip
    arm = gate.Arm(name="mw", config_name="sim_pi05_metaworld", train=(("num_train_steps", 2),))
    results = gate.run(config, [arm])

    data = lerobot.LeRobotDataset.open(tmp_path / "gate" / "data" / "demos")
    # State only: no camera column, the 39-dim MetaWorld state, and the expert's demonstrations all succeed.
    assert not [k for k in data.features if k.startswith("observation.images")]
    assert data.features["observation.state"]["shape"] == [39]
    assert data.num_episodes == 2 and np.asarray(data.column("success")).sum() == 2
    (record,) = results["arms"]
    assert record["config"] == "sim_pi05_metaworld" and record["episodes"] == 1
    assert [(r["task"], r["seed"]) for r in record["episode_records"]] == [("push-v3", gate.VALIDATION_SEED)]
