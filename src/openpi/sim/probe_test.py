"""The policy probe on real parts: a tiny tabletop dataset written by `openpi.sim.dataset`, a `sim_pi06` checkpoint
trained for 2 steps by the project's trainer (one per module, ~35 s on 2 cores), a random-weight `sim_pi05`
checkpoint saved with Orbax, and the probe run on them as the script runs it."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pytest

from openpi.datasets import lerobot
from openpi.models import params_io
from openpi.policies import policy_config
from openpi.shared import cli as _cli
from openpi.shared import normalize
from openpi.sim import dataset as sim_dataset
from openpi.sim import experiment
from openpi.sim import probe
from openpi.sim import rollout
from openpi.sim import tabletop
from openpi.training import checkpoints
from openpi.training import config as _config
from openpi.training import norm_stats
from openpi.training import trainer

TASKS = ("press_red", "press_green", "press_blue")
SIM_ROWS = {
    "identity", "noise", "image_swap/top", "image_black/top", "prompt_swap", "state_noise", "adv_ind/negative",
    "adv_ind/none",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SimRun:
    root: pathlib.Path
    data: pathlib.Path
    robot_data: pathlib.Path  # the same episodes written as a robot would record them (no sim columns)
    step_dir: pathlib.Path
    config: _config.TrainConfig
    spm: pathlib.Path


def _write_as_robot(root: pathlib.Path, episodes, image_size: int) -> pathlib.Path:
    """The episodes as a plain robot dataset: camera, state, action; robot_type 'tabletop_arm', no sim.seed."""
    env = tabletop.TabletopEnv()
    features = {k: v for k, v in sim_dataset.features(env, image_size).items()
                if k in ("observation.images.top", "observation.state", "action")}  # fmt: skip
    writer = lerobot.LeRobotDatasetWriter.create(root, fps=10, features=features, robot_type="tabletop_arm")
    with writer:
        for ep in episodes:
            frames = {"observation.state": np.stack(ep.states), "action": np.stack(ep.actions),
                      "observation.images.top": np.stack(ep.images["top"])}  # fmt: skip
            writer.add_episode(frames, ep.prompt)
        writer.finalize()
    return root


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory, tiny_spm_model) -> SimRun:
    """Expert demonstrations (2 episodes per task), their norm stats, and sim_pi06 trained for 2 steps."""
    root = tmp_path_factory.mktemp("probe")
    envs = {task: rollout.make_env("tabletop", task, 32) for task in TASKS}
    episodes = experiment.collect_expert(envs, block=0, per_task=2, quality=1.0, human=True, operator=False, seed=0)
    data = root / "data"
    sim_dataset.write_dataset(data, episodes, envs["press_red"], image_size=32)
    base = _config.get_config("sim_pi06")
    config = dataclasses.replace(
        base,
        exp_name="probe",
        data=dataclasses.replace(base.data, repo_id=str(data)),
        assets_base_dir=str(root / "assets"),
        checkpoint_base_dir=str(root / "ckpt"),
        tokenizer_path=str(tiny_spm_model),
        num_train_steps=2,
        save_interval=2,
        log_interval=1,
        batch_size=2,
        num_workers=0,
    )
    norm_stats.write_for_config(config)
    trainer.train(config, progress=False)
    step_dir = checkpoints.latest_step_dir(config.checkpoint_dir)
    assert step_dir is not None
    return SimRun(root, data, _write_as_robot(root / "robot", episodes, 32), step_dir, config, tiny_spm_model)


def _finite(tree) -> bool:
    if isinstance(tree, dict):
        return all(_finite(v) for v in tree.values())
    if isinstance(tree, list):
        return all(_finite(v) for v in tree)
    return not isinstance(tree, float) or np.isfinite(tree)


def test_probe_on_a_trained_sim_pi06_checkpoint(sim_run, tmp_path, capsys):
    out = tmp_path / "probe.json"
    argv = ["sim_pi06", f"--checkpoint-dir={sim_run.step_dir.parent}", "--data_dir", str(sim_run.data),
            f"--tokenizer-path={sim_run.spm}", "--num-frames", "6", "--num-steps", "2", "--output", str(out)]  # fmt: skip
    returned = probe.main(argv)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(returned))
    assert saved["checkpoint_dir"] == str(sim_run.step_dir)  # a run directory means its latest step
    assert saved["num_frames"] == 6 and len(set(saved["frames"])) == 6 and saved["adv_ind"] == "positive"
    rows = {row["name"]: row for row in saved["rows"]}
    assert set(rows) == SIM_ROWS and saved["skipped"] == []
    assert _finite(saved)
    for row in rows.values():
        assert row["n"] == 6
        for stats in (row["chunk_l2"], row["first_action_l2"]):
            assert 0.0 <= stats["median"] <= stats["max"] and 0.0 <= stats["mean"] <= stats["max"]
    # Same inputs, same noise: exactly the same chunk; a redrawn noise moves it.
    assert rows["identity"]["chunk_l2"]["max"] == 0.0 and rows["identity"]["first_action_l2"]["max"] == 0.0
    assert rows["noise"]["chunk_l2"]["median"] > 0.0 and rows["noise"]["first_action_l2"]["median"] > 0.0
    assert rows["noise"]["chunk_l2_vs_noise"] == 1.0 and rows["identity"]["chunk_l2_vs_noise"] == 0.0
    # Every other row changed something the model reads (a 2-step model moves little, but not nothing).
    for name in SIM_ROWS - {"identity"}:
        assert rows[name]["chunk_l2"]["mean"] > 0.0, name
    gt = saved["ground_truth"]
    assert saved["ground_truth_skipped"] is None and gt["n"] == 6 and gt["prompt_swap"]["n"] == 6
    assert 0.0 < gt["policy"]["mean"] < np.sqrt(2) and 0.0 < gt["mean_target_baseline"]["mean"] < np.sqrt(2)
    table = capsys.readouterr().out
    for name in SIM_ROWS:
        assert f"\n{name} " in table
    assert "Ground truth (tabletop sim, 6 frames)" in table and f"Wrote {out}" in table and "WARNING" not in table


def test_the_recorded_expert_actions_hit_the_rebuilt_targets(sim_run):
    """The ground truth is right: the expert's recorded first action points at the button rebuilt from the seed."""
    ds = lerobot.LeRobotDataset.open(sim_run.data)
    assert probe.is_tabletop_sim(ds) == (True, "")
    layouts = probe.TabletopLayouts()
    actions, seeds = ds.column("action"), ds.column(sim_dataset.SEED).reshape(len(ds))
    prompts = [ds.tasks[int(t)] for t in ds.column("task_index")]
    predicted = np.stack([probe.position_target(a) for a in actions])
    targets = np.stack([layouts.target(p, s) for p, s in zip(prompts, seeds, strict=True)])
    errors = probe.first_target_errors(predicted, targets)
    assert errors["policy"]["max"] < 1e-6
    assert errors["mean_target_baseline"]["mean"] > 0.05  # the buttons move between episodes
    # Another task's button in the same layout is far (buttons are at least 0.3 apart).
    other = np.stack([layouts.target(ds.tasks[(int(t) + 1) % 3], s) for t, s in
                      zip(ds.column("task_index"), seeds, strict=True)])  # fmt: skip
    assert np.linalg.norm(predicted - other, axis=-1).min() >= 0.3


def test_a_checkpoint_under_a_run_is_probed_with_the_runs_own_tokenizer(sim_run, tmp_path, monkeypatch, caplog):
    """Issue 31.3: no `OPENPI_DATA_HOME=<run>/openpi_data_home` by hand; the run's data home is found from the path."""
    import shutil

    run = tmp_path / "sim_output"
    step_dir = run / "checkpoints" / "sim_pi06" / "it1" / sim_run.step_dir.name
    shutil.copytree(sim_run.step_dir, step_dir)
    tokenizer = run / probe.RUN_DATA_HOMES[0] / "big_vision" / "paligemma_tokenizer.model"
    tokenizer.parent.mkdir(parents=True)
    shutil.copy(sim_run.spm, tokenizer)  # the tokenizer the checkpoint was trained with, where the experiment puts it
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path / "empty_cache"))  # no tokenizer in the user's cache
    assert probe.run_tokenizer(step_dir) == tokenizer and probe.run_tokenizer(sim_run.step_dir) is None
    argv = ["sim_pi06", f"--checkpoint-dir={step_dir}", "--data_dir", str(sim_run.data), "--num-frames", "2",
            "--num-steps", "1", "--output", str(tmp_path / "probe.json")]  # fmt: skip
    caplog.set_level("INFO", logger="openpi.probe_policy")
    assert probe.main(argv)["num_frames"] == 2
    assert f"Using the tokenizer of the run that wrote {step_dir}: {tokenizer}" in caplog.text


def test_pi05_checkpoint_on_robot_data_skips_the_indicator_and_the_ground_truth(sim_run, tmp_path):
    """A random-weight sim_pi05 checkpoint (params saved with Orbax, the run's norm stats) on a dataset without the
    simulator's columns: no indicator rows, and the ground-truth section says why it is skipped."""
    config = dataclasses.replace(_config.get_config("sim_pi05"), tokenizer_path=str(sim_run.spm))
    step = tmp_path / "run" / "0"
    params_io.save_params(step / "params", policy_config.random_params(config.model, seed=1))
    stats = checkpoints.restore_norm_stats(sim_run.step_dir)
    normalize.save(step / "assets" / "somewhere_else", stats)
    args = probe.ProbeArgs(checkpoint_dir=str(step), data_dir=str(sim_run.robot_data), num_frames=3, num_steps=1,
                           output=str(tmp_path / "p.json"))  # fmt: skip
    result = probe.probe(config, args)
    rows = {row["name"] for row in result["rows"]}
    assert rows == SIM_ROWS - {"adv_ind/negative", "adv_ind/none"}
    assert result["adv_ind"] is None
    assert {s["name"]: s["reason"] for s in result["skipped"]} == {
        "adv_ind/*": "not a pi0.6 config (its prompt has no indicator)"
    }
    assert result["ground_truth"] is None
    assert "not tabletop sim data (robot_type 'tabletop_arm', no 'sim.seed' column)" in result["ground_truth_skipped"]
    assert "Ground truth skipped: not tabletop sim data" in probe.format_table(result)
    assert _finite(result)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--checkpoint-dir", "/nonexistent/run/9"], "Checkpoint directory /nonexistent/run/9 does not exist"),
        (["--num-frames", "0"], "--num-frames must be at least 1, got 0."),
        # A YAM config on the tabletop data: the config's cameras are not in the dataset.
        (["--config", "debug_pi06"], "lacks features ['observation.images.head_camera'"),
        (["--config", "debug"], "Config debug reads no dataset (fake data)"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(sim_run, argv, message, capsys, tmp_path):
    name = "sim_pi06"
    if argv[0] == "--config":
        name, argv = argv[1], []
    full = [name, f"--checkpoint-dir={sim_run.step_dir}", f"--data-dir={sim_run.data}",
            f"--tokenizer-path={sim_run.spm}", f"--output={tmp_path / 'p.json'}", *argv]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        _cli.run(probe.main, full, name="openpi.probe_policy")
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    # Progress and INFO lines may come first; the error is one line, the last, with no traceback.
    errors_logged = [line for line in lines if " ERROR " in line]
    assert errors_logged == lines[-1:] and "Traceback" not in "\n".join(lines), lines
    assert " ERROR openpi.probe_policy: " in lines[-1] and message in lines[-1], lines[-1]
    assert not (tmp_path / "p.json").exists()


# ------------------------------------------------------------------------------------------ pure functions


def _obs():
    image = np.full((4, 4, 3), 7, np.uint8)
    return {"images": {"top": image, "wrist": image + 1}, "state": np.array([0.5, -1.0, 2.0], np.float32),
            "prompt": "press the red button", "adv_ind": "positive"}  # fmt: skip


def test_perturbations_change_one_input_and_leave_the_original_alone():
    obs = _obs()
    other = {"images": {"top": np.full((4, 4, 3), 200, np.uint8)}}
    swapped = probe.swap_image(obs, "top", other)
    assert swapped["images"]["top"][0, 0, 0] == 200 and swapped["images"]["wrist"] is obs["images"]["wrist"]
    black = probe.black_image(obs, "wrist")
    assert black["images"]["wrist"].dtype == np.uint8 and not black["images"]["wrist"].any()
    assert probe.with_prompt(obs, "press the blue button")["prompt"] == "press the blue button"
    assert probe.with_indicator(obs, "none")["adv_ind"] == "none"
    fresh = _obs()
    assert obs["images"]["top"].tolist() == fresh["images"]["top"].tolist() and obs["images"]["wrist"].all()
    assert (obs["prompt"], obs["adv_ind"]) == (fresh["prompt"], fresh["adv_ind"])

    rng = np.random.default_rng(0)
    # std shorter than the state: the missing dims are not perturbed; scale 0 changes nothing.
    moved = probe.perturb_state(obs, rng, 0.5, np.array([1.0, 0.0]))
    assert moved["state"][0] != obs["state"][0] and moved["state"][1:].tolist() == obs["state"][1:].tolist()
    assert probe.perturb_state(obs, rng, 0.0, np.ones(3))["state"].tolist() == obs["state"].tolist()
    draws = np.stack([probe.perturb_state(obs, rng, 0.1, np.full(3, 2.0))["state"] for _ in range(4000)])
    assert np.std(draws - obs["state"], axis=0) == pytest.approx([0.2, 0.2, 0.2], rel=0.05)


def test_action_changes_and_the_summary():
    base = np.zeros((3, 2))
    other = base.copy()
    other[0] = [3.0, 4.0]
    other[2] = [0.0, 12.0]
    assert probe.action_changes(base, other) == (13.0, 5.0)
    assert probe.action_changes(base, base) == (0.0, 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        probe.action_changes(base, np.zeros((2, 2)))
    rows = probe.summarize({"noise": [(1.0, 0.5), (3.0, 1.5)], "image_black/top": [(0.0, 0.0)], "prompt_swap": []})
    assert [r["name"] for r in rows] == ["noise", "image_black/top"]
    assert rows[0]["chunk_l2"] == {"mean": 2.0, "median": 2.0, "p90": pytest.approx(2.8), "max": 3.0}
    assert rows[0]["first_action_l2"]["mean"] == 1.0 and rows[0]["n"] == 2
    assert rows[1]["description"] == "image blacked out"
    assert rows[0]["chunk_l2_vs_noise"] == 1.0 and rows[1]["chunk_l2_vs_noise"] == 0.0


def test_the_table_warns_when_the_identity_row_is_not_zero():
    def result(identity_change: float) -> dict:
        rows = probe.summarize({"identity": [(identity_change, 0.0)], "noise": [(2.0, 1.0)]})
        reference = {"chunk_l2": rows[1]["chunk_l2"], "first_action_l2": rows[1]["first_action_l2"]}
        return {"config": "c", "checkpoint_dir": "s", "data_dir": "d", "num_frames": 1, "seed": 0, "adv_ind": None,
                "rows": rows, "reference": reference, "skipped": [{"name": "prompt_swap", "reason": "one task"}],
                "ground_truth": None, "ground_truth_skipped": "not tabletop sim data"}  # fmt: skip

    quiet, noisy = probe.format_table(result(0.0)), probe.format_table(result(0.5))
    assert "WARNING" not in quiet and "WARNING: the identity row is not 0 (max 0.5)" in noisy
    assert "skipped prompt_swap: one task" in quiet and "Ground truth skipped: not tabletop sim data" in quiet


def test_position_targets_and_first_target_errors():
    assert probe.position_target(np.array([-1.0, 1.0, 0.3])).tolist() == [0.0, 1.0]
    assert probe.position_target(np.array([3.0, 0.0])).tolist() == [1.0, 0.5]  # clipped as the env clips
    targets = np.array([[0.2, 0.2], [0.8, 0.2], [0.5, 0.8]])
    errors = probe.first_target_errors(targets + np.array([0.0, 0.1]), targets)
    assert errors["policy"]["mean"] == pytest.approx(0.1)
    assert errors["mean_target"] == pytest.approx([0.5, 0.4])
    expected = np.linalg.norm(targets - [0.5, 0.4], axis=-1)
    assert errors["mean_target_baseline"]["mean"] == pytest.approx(expected.mean())


def test_split_args_sends_the_probes_flags_to_the_probe_and_the_rest_to_the_config():
    ours, theirs = probe.split_args(
        ["--num_frames", "8", "--data.repo-id=/d", "--checkpoint-dir=/c", "--model.image-keys", "a", "b", "--seed", "3"]
    )
    assert ours == ["--num_frames", "8", "--checkpoint-dir=/c", "--seed", "3"]
    assert theirs == ["--data.repo-id=/d", "--model.image-keys", "a", "b"]
    config, args = probe.parse(["sim_pi05", "--data_dir=/d", "--num-frames=8", "--batch-size=4"])
    assert config.name == "sim_pi05" and config.batch_size == 4
    assert args.data_dir == "/d" and args.num_frames == 8 and args.adv_ind == "positive"
