"""Collection and closed-loop evaluation in simulation through a real served policy on 127.0.0.1.

One dummy-size `sim_pi06` policy (random weights, so a poor policy the operator must correct) is served by the
real websocket server for the whole module (one compile). A recording wrapper on the server side keeps the
`adv_ind` of every request, so the tests can see what actually travelled over the socket.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import threading
from typing import ClassVar

import numpy as np
import pytest

from openpi.datasets import lerobot
from openpi.datasets import recap_columns
from openpi.policies import policy_config
from openpi.serving import serve_cli
from openpi.serving import websocket_policy_server as wps
from openpi.sim import base
from openpi.sim import clients
from openpi.sim import collect_cli as collect_rollouts
from openpi.sim import dataset as sim_dataset
from openpi.sim import eval_cli as eval_policy
from openpi.sim import metrics
from openpi.sim import operator as _operator
from openpi.sim import registry
from openpi.sim import rollout
from openpi.sim import tabletop
from openpi.training import config as _config
from openpi_client import base_policy

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"


class RecordingPolicy(base_policy.BasePolicy):
    """Server side: the real policy, plus the indicator each request carried (None when it had none)."""

    def __init__(self, policy):
        self.policy = policy
        self.adv_inds: list[str | None] = []
        self._lock = threading.Lock()

    def infer(self, obs: dict) -> dict:
        with self._lock:
            self.adv_inds.append(obs.get("adv_ind"))
        return self.policy.infer(obs)


@pytest.fixture(scope="module")
def served(tiny_spm_model):
    policy = policy_config.create_dummy_policy(
        _config.get_config("sim_pi06"), tokenizer_path=tiny_spm_model, sample_kwargs={"num_steps": 2}
    )
    recording = RecordingPolicy(policy)
    server = wps.WebsocketPolicyServer(recording, port=0, metadata=policy.metadata)
    with server.start_in_thread() as srv:
        yield recording, srv.port


class LoggingOperator(_operator.Operator):
    """The collection's operator, logging its own decision at every step of every episode (independent record)."""

    log: ClassVar[list[list[int]]] = []

    def reset(self) -> None:
        super().reset()
        if hasattr(self, "_started"):
            LoggingOperator.log.append([])
        self._started = True

    def filter(self, env, proposed_action):
        action, intervened = super().filter(env, proposed_action)
        LoggingOperator.log[-1].append(int(intervened))
        return action, intervened


def _per_episode(ds, name: str) -> list[np.ndarray]:
    values = np.asarray(ds.column(name)).reshape(len(ds), -1)[:, 0]
    return [values[ep.from_index : ep.to_index] for ep in ds.episodes]


def test_collection_through_the_served_policy_records_the_operators_takeovers(served, tmp_path, monkeypatch):
    recording, port = served
    recording.adv_inds.clear()
    LoggingOperator.log = []

    def make_operator(args):
        # One per episode; the runtime resets it at the episode start, which opens the episode's log.
        return LoggingOperator(args.stall_steps, args.min_progress, args.handback_steps)

    monkeypatch.setattr(clients, "make_operator", make_operator)
    root = tmp_path / "rollouts"
    args = collect_rollouts.Args(
        agent="policy",
        port=port,
        tasks=("press_red", "press_blue"),
        episodes_per_task=2,
        seed=7,
        adv_ind="positive",
        output_dir=str(root),
        summary_json=str(tmp_path / "summary.json"),
    )
    result = collect_rollouts.run(args)

    ds = lerobot.LeRobotDataset.open(root)
    recap_columns.validate_recap_columns(ds)
    assert ds.num_episodes == 4 and len(ds) == result["frames"]
    assert [ds.tasks[i] for i in range(len(ds.tasks))] == ["press the red button", "press the blue button"]
    seeds = [int(s[0]) for s in _per_episode(ds, sim_dataset.SEED)]
    assert seeds == [7, 8, 7, 8]
    # Each episode's intervention column is exactly the operator's own per-step decisions.
    logged = LoggingOperator.log
    recorded = _per_episode(ds, "intervention")
    assert [list(map(int, r)) for r in recorded] == logged
    flags = np.concatenate(recorded)
    assert 0 < flags.sum() < len(flags), "a random policy should be both corrected and left alone"
    # Human frames are the noise-free expert's (flagged clean); the random policy's frames are not.
    np.testing.assert_array_equal(np.concatenate(_per_episode(ds, sim_dataset.CLEAN_ACTION)), flags)
    # Every request carried the indicator; the broker asked about once per replanning period.
    assert recording.adv_inds and set(recording.adv_inds) == {"positive"}
    assert len(recording.adv_inds) >= (len(flags) - flags.sum()) / args.replan_steps
    summary = result["summary"]
    assert summary["overall"]["episodes"] == 4
    assert summary["overall"]["human_step_fraction"] == pytest.approx(flags.sum() / len(flags))
    assert (tmp_path / "summary.json").is_file()
    # The same seeds again refuse to overwrite the dataset unless asked.
    with pytest.raises(clients.CollectError, match="already exists; pass --overwrite"):
        collect_rollouts.run(args)


def test_expert_demonstrations_are_all_human_and_successful(tmp_path, capsys):
    root = tmp_path / "demos"
    collect_rollouts.main(["--episodes-per-task", "2", "--quality", "1.0", "--output-dir", str(root)])
    out = capsys.readouterr().out
    assert "press_green" in out and "100.0% (6/6)" in out
    ds = lerobot.LeRobotDataset.open(root)
    recap_columns.validate_recap_columns(ds)
    assert ds.num_episodes == 6
    assert np.all(ds.column("intervention") == 1) and np.all(ds.column(sim_dataset.CLEAN_ACTION) == 1)
    successes = _per_episode(ds, sim_dataset.SUCCESS)
    assert all(s[-1] == 1 and s[:-1].sum() == 0 for s in successes)
    assert np.asarray(ds.get(0)["observation.images.top"]).size == 32 * 32 * 3
    # Each frame's progress is the env's own measure at that frame's observation (minus the distance from the
    # recorded gripper to the prompted button of the recorded layout), and the expert makes it grow.
    env = tabletop.TabletopEnv()
    states = np.asarray(ds.column("observation.state"), np.float32).reshape(ds.num_frames, -1)
    progress = np.asarray(ds.column(sim_dataset.PROGRESS), np.float32).reshape(-1)
    task_index = np.asarray(ds.column("task_index")).reshape(-1)
    for ep in ds.episodes:
        start, stop = ep.from_index, ep.to_index
        env.reset(int(np.asarray(ds.column(sim_dataset.SEED)).reshape(-1)[start]))
        colour = next(i for i, c in enumerate(("red", "green", "blue")) if c in ds.tasks[int(task_index[start])])
        expected = -np.linalg.norm(states[start:stop, :2] - env.buttons[colour], axis=1)
        np.testing.assert_allclose(progress[start:stop], expected, atol=1e-5)
        assert progress[stop - 1] > progress[start]


def test_evaluation_against_the_served_policy(served, tmp_path):
    recording, port = served
    recording.adv_inds.clear()
    out = tmp_path / "eval"
    result = eval_policy.evaluate(
        port=port,
        tasks=("press_green", "press_blue"),
        episodes_per_task=3,
        num_clients=2,
        adv_ind="negative",
        operator=True,
        output_dir=str(out),
    )
    summary = result["summary"]
    assert set(summary["tasks"]) == {"press_green", "press_blue"}
    for task, stats in summary["tasks"].items():
        episodes = [e for e in result["episodes"] if e["task"] == task]
        assert [e["seed"] for e in episodes] == [1_000_000, 1_000_001, 1_000_002]
        successes = sum(e["success"] for e in episodes)
        assert stats["successes"] == successes and stats["episodes"] == 3
        assert stats["ci95"] == list(metrics.wilson_interval(successes, 3))
        assert stats["interventions_per_episode"] == pytest.approx(sum(e["interventions"] for e in episodes) / 3)
    # A random policy stalls: the operator takes over in evaluation too.
    assert summary["overall"]["interventions_per_episode"] > 0
    assert set(recording.adv_inds) == {"negative"}
    saved = json.loads((out / "eval.json").read_text())
    assert saved["summary"] == summary and saved["args"]["adv_ind"] == "negative"
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_without_indicator_sends_none(served, tmp_path):
    recording, port = served
    recording.adv_inds.clear()
    result = eval_policy.evaluate(port=port, tasks=("press_red",), episodes_per_task=1, num_clients=1)
    assert result["summary"]["overall"]["episodes"] == 1
    assert recording.adv_inds and set(recording.adv_inds) == {None}


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        (collect_rollouts, ["--tasks", "press_rd"], "did you mean 'press_red'"),
        (collect_rollouts, ["--agent", "robot"], "invalid choice 'robot' for argument '--agent'"),
        (collect_rollouts, ["--episodes-per-task", "0"], "--episodes-per-task must be at least 1"),
        (eval_policy, ["--bogus", "1"], "Unrecognized options: --bogus"),
        (eval_policy, ["--checkpoint-dir", "x"], "add --serve-config"),
        (eval_policy, ["--serve-config", "sim_pi06_infer"], "exactly one of --checkpoint-dir"),
    ],
)
def test_cli_user_errors_are_one_line_with_status_2(script, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        script.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert " ERROR " in err and message in err and "\n" not in err


@pytest.mark.parametrize("script", [collect_rollouts, eval_policy])
def test_help_exits_0(script, capsys):
    with pytest.raises(SystemExit) as info:
        script.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--episodes-per-task" in out and "--adv-ind" in out and "--seed" in out


def test_unknown_task_in_a_real_process_is_one_line_with_status_2(tmp_path):
    bad = subprocess.run(
        [sys.executable, str(SCRIPTS / "eval_policy.py"), "--tasks", "press_purple", "--port", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "ERROR openpi.eval_policy: The 'tabletop' env has no task 'press_purple'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_serve_policy_warms_sim_configs_up(served, caplog):
    """Issue 31.3: `python -m openpi.serving.serve_cli` itself (no sim entry point handing it an example) warms up."""
    recording, _ = served
    caplog.set_level("INFO", logger="openpi.serve_policy")
    serve_cli._warmup(recording.policy, _config.get_config("sim_pi06_infer"))
    assert "Warm-up request done" in caplog.text


@pytest.mark.parametrize(
    "name", [n for n in _config.config_names() if isinstance(_config.get_config(n).data, _config.LeRobotSimDataConfig)]
)
def test_sim_warmup_example_is_what_an_env_sends(name):
    """The warm-up observation is built from the data config (serving cannot ask an env): it must have the cameras,
    image layout, state size and action size of a registered env's own observation, or the warm-up compiles a
    model the clients never use."""
    data = _config.get_config(name).data
    example = data.warmup_example()
    fits = []
    for env_name in registry.env_names():
        try:
            env = registry.make_env(env_name, registry.task_names(env_name)[0])
        except base.SimError:  # an optional extra that is not installed
            continue
        obs = env.reset(0)
        fits.append(env_name)
        if env.action_dim != data.action_dim or not set(data.cameras) <= set(env.cameras):
            continue
        assert sorted(example["images"]) == sorted(data.cameras)
        assert example["state"].shape == obs["state"].shape, f"{name}: state_dim is not {env_name}'s"
        for camera in data.cameras:
            image = obs["images"][camera]
            assert example["images"][camera].dtype == image.dtype and example["images"][camera].shape == image.shape
        assert example["state"].dtype == obs["state"].dtype and isinstance(example["prompt"], str)
        return
    if "metaworld" in name and "metaworld" not in fits:
        pytest.skip("MetaWorld is not installed (uv sync --extra sim).")
    pytest.fail(f"No registered env ({fits}) sends what {name}'s warm-up example has: check state_dim/action_dim.")


@pytest.mark.slow
def test_evaluation_starts_and_stops_its_own_server(tiny_spm_model, tmp_path):
    """--serve-config: serve_policy.py runs as a subprocess on a free port, logs to server.log, and is stopped."""
    result = eval_policy.evaluate(
        serve_config="sim_pi06_infer",
        dummy_weights=True,
        tokenizer_path=str(tiny_spm_model),
        tasks=("press_red",),
        episodes_per_task=2,
        output_dir=str(tmp_path),
    )
    assert result["summary"]["overall"]["episodes"] == 2 and result["server_metadata"]["config"] == "sim_pi06_infer"
    assert "Warm-up request done" in (tmp_path / "server.log").read_text()


def test_parallel_clients_repeat_every_episode_exactly(tiny_spm_model):
    """Parallel clients interleave their requests differently on every run; with noise drawn per observation (as
    the experiment's and eval_policy.py's servers draw it) a fresh server repeats every episode, every applied
    action, exactly, so a rerun of an evaluation or a collection does too."""
    from openpi_client import websocket_client_policy

    jobs = [("press_red", seed) for seed in range(4)] + [("press_blue", seed) for seed in range(4)]

    def run(clients: int):
        policy = policy_config.create_dummy_policy(
            _config.get_config("sim_pi06"),
            tokenizer_path=tiny_spm_model,
            sample_kwargs={"num_steps": 2},
            noise_per_observation=True,
        )
        with wps.WebsocketPolicyServer(policy, port=0).start_in_thread() as srv:
            return rollout.run_jobs(
                jobs,
                env_name="tabletop",
                image_size=32,
                make_agent=lambda env, client: rollout.policy_agent_over(client, env.env.action_dim, 5, "positive"),
                make_worker_state=lambda: websocket_client_policy.WebsocketClientPolicy("127.0.0.1", srv.port),
                close_worker_state=lambda client: client.close(),
                num_workers=clients,
            )

    # One client against two: the most different interleavings of the same requests.
    first, second = run(2), run(1)
    assert [(e.task, e.seed) for e in first] == jobs
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(np.stack(a.actions), np.stack(b.actions))
    # Not trivially equal: different layouts get different actions.
    assert not np.allclose(first[0].actions[0], first[1].actions[0])
