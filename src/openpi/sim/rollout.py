"""Episodes in simulation through the client runtime: the agents, the operator's corrections and the recording.

A simulated robot is driven exactly like a real one: `openpi_client.runtime.Runtime` runs the episode loop over
an `Environment` (`SimEnvironment`, one `SimEnv` plus the seeds of its episodes) and an `Agent`. The agent is the
policy (`PolicyAgent` over an `ActionChunkBroker` over a `WebsocketClientPolicy`, as on a robot) or the scripted
expert (`ExpertAgent`); `CorrectedAgent` puts the operator (`openpi.sim.operator.Operator`, the stand-in for a
human watching the robot) between the agent and the env. `EpisodeRecorder` is a runtime `Subscriber` that keeps
what was observed and what was applied, frame by frame, with the intervention flag the operator decided.

Each action an agent returns is a dict: `actions` (one step, [action_dim]), `intervention` (1 when a human,
i.e. the expert, chose it) and `clean` (1 when it is the noise-free expert's action; a policy's action is never
clean). The flags travel with the action so that the recorder never has to guess who drove.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
import concurrent.futures
import dataclasses
import threading
from typing import Any

import numpy as np

from openpi.shared import progress as _progress
from openpi.sim import base
from openpi.sim import expert as _expert
from openpi.sim import metrics
from openpi.sim import operator as _operator
from openpi.sim import registry as _registry
from openpi_client import action_chunk_broker
from openpi_client import base_policy
from openpi_client.runtime import agent as _agent
from openpi_client.runtime import environment as _environment
from openpi_client.runtime import runtime as _runtime
from openpi_client.runtime import subscriber as _subscriber
from openpi_client.runtime.agents import policy_agent


class SimEnvironment(_environment.Environment):
    """A `SimEnv` as a runtime `Environment`: episode i starts from `seeds[i]` (cycling when run longer)."""

    def __init__(self, env: base.SimEnv, seeds: Sequence[int]):
        if len(seeds) == 0:
            raise base.SimError("SimEnvironment needs at least one episode seed.")
        self.env = env
        self.seeds = [int(s) for s in seeds]
        self.episode = -1
        self._obs: dict[str, Any] | None = None

    @property
    def seed(self) -> int:
        return self.seeds[self.episode % len(self.seeds)]

    def reset(self) -> None:
        self.episode += 1
        self._obs = self.env.reset(self.seed)

    def is_episode_complete(self) -> bool:
        return bool(self.env.done)

    def get_observation(self) -> dict:
        if self._obs is None:
            raise base.SimError("SimEnvironment.get_observation() before reset().")
        return self._obs

    def apply_action(self, action: dict) -> None:
        self._obs = self.env.step(np.asarray(action["actions"], np.float32))


def _step_action(actions: Any, action_dim: int) -> np.ndarray:
    """One step of a policy's reply (the broker already sliced the chunk); extra model dims are an error."""
    step = np.asarray(actions, np.float32)
    if step.shape != (action_dim,):
        raise base.SimError(
            f"The policy returned an action of shape {step.shape} for an env with action_dim {action_dim}; "
            "serve a config whose outputs match the env (e.g. a sim_* config for this env)."
        )
    return step


class PolicyStepAgent(_agent.Agent):
    """An autonomous agent: whatever the inner agent (e.g. `PolicyAgent` over a broker) replies, flagged 0/0."""

    def __init__(self, inner: _agent.Agent, action_dim: int):
        self.inner = inner
        self.action_dim = action_dim

    def get_action(self, observation: dict) -> dict:
        reply = self.inner.get_action(observation)
        return {"actions": _step_action(reply["actions"], self.action_dim), "intervention": 0, "clean": 0}

    def reset(self) -> None:
        self.inner.reset()


class ExpertAgent(_agent.Agent):
    """The scripted expert at a given quality.

    As a demonstrator (`human=True`) its frames are human frames. With `human=False` it stands in for a mediocre
    autonomous policy (a low-quality expert makes the slow successes and failures a first policy makes), whose
    frames are autonomous and which the operator may correct.
    """

    def __init__(self, env: SimEnvironment, expert: _expert.ScriptedExpert, *, human: bool = True):
        self.environment = env
        self.expert = expert
        self.human = human

    def get_action(self, observation: dict) -> dict:
        del observation  # the expert reads the simulator's privileged state
        action, clean = self.expert.act(self.environment.env)
        return {"actions": action, "intervention": int(self.human), "clean": int(clean)}

    def reset(self) -> None:
        self.expert.reset(self.environment.seed)


class CorrectedAgent(_agent.Agent):
    """An autonomous agent watched by the operator, who takes over (stall or unsafe) and hands back.

    While the operator drives, the policy is not asked (a robot's human takes the controls); when control comes
    back the inner agent is reset, so a chunked policy plans afresh from the state the human left, instead of
    replaying the rest of a chunk planned before the takeover.
    """

    def __init__(self, env: SimEnvironment, inner: _agent.Agent, operator: _operator.Operator):
        self.environment = env
        self.inner = inner
        self.operator = operator

    def get_action(self, observation: dict) -> dict:
        sim = self.environment.env
        if self.operator.driving:
            action, intervened = self.operator.filter(sim, np.zeros(sim.action_dim, np.float32))
        else:
            proposed = self.inner.get_action(observation)
            action, intervened = self.operator.filter(sim, proposed["actions"])
            if not intervened:
                return proposed
        if not self.operator.driving:  # this was the last step of the takeover
            self.inner.reset()
        return {"actions": action, "intervention": int(intervened), "clean": 1}

    def reset(self) -> None:
        self.operator.reset()
        self.inner.reset()


@dataclasses.dataclass
class Episode:
    """One recorded episode: per-frame observations and the applied action with its flags, and the outcome."""

    task: str
    prompt: str
    seed: int
    images: dict[str, list[np.ndarray]]
    states: list[np.ndarray]
    actions: list[np.ndarray]
    intervention: list[int]
    clean: list[int]
    success: bool = False
    outcome: str | None = None
    # The env's own `progress()` (e.g. minus the distance to the goal) at each frame's observation: what a value
    # model could at best read from the scene, kept to grade value models against a ceiling.
    progress: list[float] = dataclasses.field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def human_steps(self) -> int:
        return int(sum(self.intervention))

    @property
    def takeovers(self) -> int:
        """Number of human segments that interrupted autonomous control (0 for a pure demonstration)."""
        flags = np.asarray(self.intervention, np.int64)
        if flags.size == 0 or flags.all():
            return 0
        return int(np.sum((flags[1:] == 1) & (flags[:-1] == 0)) + (flags[0] == 1))


class EpisodeRecorder(_subscriber.Subscriber):
    """Keeps every frame (observation before the step, applied action, flags) and the outcome of each episode."""

    def __init__(
        self, env: SimEnvironment, *, keep_frames: bool = True, on_episode: Callable[[Episode], None] | None = None
    ):
        self.environment = env
        self.keep_frames = keep_frames
        self.on_episode = on_episode
        self.episodes: list[Episode] = []
        self._current: Episode | None = None
        self._progress = 0.0

    def on_episode_start(self) -> None:
        sim = self.environment.env
        self._current = Episode(
            task=sim.task,
            prompt=sim.prompt,
            seed=self.environment.seed,
            images={camera: [] for camera in sim.cameras},
            states=[],
            actions=[],
            intervention=[],
            clean=[],
        )
        # Subscribers see a step after it is applied: the progress at the next frame's observation is read now.
        self._progress = float(sim.progress())

    def on_step(self, observation: dict, action: dict) -> None:
        episode = self._current
        if self.keep_frames:
            for camera, frames in episode.images.items():
                frames.append(np.asarray(observation["images"][camera]))
            episode.states.append(np.asarray(observation["state"], np.float32))
        episode.actions.append(np.asarray(action["actions"], np.float32))
        episode.intervention.append(int(action.get("intervention", 0)))
        episode.clean.append(int(action.get("clean", 0)))
        episode.progress.append(self._progress)
        self._progress = float(self.environment.env.progress())

    def on_episode_end(self) -> None:
        sim = self.environment.env
        episode = self._current
        episode.success = bool(sim.success)
        episode.outcome = getattr(sim, "outcome", None)
        self.episodes.append(episode)
        self._current = None
        if self.on_episode is not None:
            self.on_episode(episode)


def run_episodes(
    env: base.SimEnv,
    seeds: Sequence[int],
    make_agent: Callable[[SimEnvironment], _agent.Agent],
    *,
    keep_frames: bool = True,
    on_episode: Callable[[Episode], None] | None = None,
) -> list[Episode]:
    """One episode per seed on `env` with the agent `make_agent` builds, through the client runtime."""
    environment = SimEnvironment(env, seeds)
    recorder = EpisodeRecorder(environment, keep_frames=keep_frames, on_episode=on_episode)
    runtime = _runtime.Runtime(
        environment,
        make_agent(environment),
        subscribers=[recorder],
        num_episodes=len(seeds),
        max_episode_steps=env.max_steps,
    )
    runtime.run()
    return recorder.episodes


# ------------------------------------------------------------------------------------------ clients and workers


def make_env(env_name: str, task: str, image_size: int) -> base.SimEnv:
    """An env for `task`; envs with cameras render at `image_size` pixels (state-only envs have no such knob)."""
    env = _registry.make_env(env_name, task)
    if env.cameras and getattr(env, "image_size", image_size) != image_size:
        env = _registry.make_env(env_name, task, image_size=image_size)
    return env


class AdvIndPolicy(base_policy.BasePolicy):
    """Adds the advantage indicator to every request, as a pi0.6 robot client asking for `positive` does."""

    def __init__(self, policy: base_policy.BasePolicy, adv_ind: str):
        self.policy = policy
        self.adv_ind = adv_ind

    def infer(self, obs: dict) -> dict:
        return self.policy.infer({**obs, "adv_ind": self.adv_ind})

    def reset(self) -> None:
        self.policy.reset()


def policy_agent_over(
    client: base_policy.BasePolicy, action_dim: int, replan_steps: int, adv_ind: str | None
) -> PolicyStepAgent:
    """The robot client's agent: PolicyAgent over an ActionChunkBroker over the (indicator-adding) client."""
    inner = client if adv_ind is None else AdvIndPolicy(client, adv_ind)
    broker = action_chunk_broker.ActionChunkBroker(inner, action_horizon=replan_steps)
    return PolicyStepAgent(policy_agent.PolicyAgent(broker), action_dim)


def episode_result(episode: Episode) -> metrics.EpisodeResult:
    return metrics.EpisodeResult(
        task=episode.task,
        seed=episode.seed,
        success=episode.success,
        steps=episode.length,
        interventions=episode.takeovers,
        human_steps=episode.human_steps,
        outcome=episode.outcome,
    )


Job = tuple[str, int]  # (task, seed)


def run_jobs(
    jobs: Sequence[Job],
    *,
    env_name: str,
    image_size: int,
    make_agent: Callable[[SimEnvironment, object], _agent.Agent],
    make_worker_state: Callable[[], object] = lambda: None,
    close_worker_state: Callable[[object], None] = lambda state: None,
    num_workers: int = 1,
    keep_frames: bool = True,
    progress: _progress.Progress | None = None,
) -> list[Episode]:
    """Runs one episode per (task, seed) job through the client runtime; returns them in job order.

    Each worker thread has its own envs and its own `make_worker_state()` (e.g. a websocket connection), and
    builds the agent for an episode with `make_agent(environment, state)`. Every episode depends only on its
    seed (env, expert and operator are reset from it) and, for a served policy, on a server that draws its noise
    per observation (`Policy(noise_per_observation=True)`), so the result does not depend on which worker ran it.
    A failing episode stops the other workers after their current episode and its error is raised.
    """
    if num_workers < 1:
        raise base.SimError(f"The number of parallel clients must be at least 1, got {num_workers}.")
    results: dict[int, Episode] = {}
    next_job = iter(range(len(jobs)))
    lock = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        state = make_worker_state()
        envs: dict[str, base.SimEnv] = {}
        try:
            while not stop.is_set():
                with lock:
                    index = next(next_job, None)
                if index is None:
                    return
                task, seed = jobs[index]
                if task not in envs:
                    envs[task] = make_env(env_name, task, image_size)
                (episode,) = run_episodes(
                    envs[task], [seed], lambda environment: make_agent(environment, state), keep_frames=keep_frames
                )
                with lock:
                    results[index] = episode
                if progress is not None:
                    progress.update()
        except BaseException:
            stop.set()
            raise
        finally:
            close_worker_state(state)

    workers = min(num_workers, len(jobs)) or 1
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="sim-client") as pool:
        futures = [pool.submit(worker) for _ in range(workers)]
        for future in futures:
            future.result()  # re-raises the first failure (the others stopped after their episode)
    return [results[i] for i in range(len(jobs))]
