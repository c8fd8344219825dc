"""MetaWorld v3 tasks behind the `openpi.sim.base.SimEnv` contract (state observations only; optional ``sim`` extra).

Why: the embedded tabletop world is cheap but simple; MetaWorld (MIT, MuJoCo, a Sawyer arm) is a standard
third-party benchmark with contact-rich tasks and a scripted policy per task, so the RECAP loop (collect with
a scripted expert and operator, train, evaluate) can be checked on something nobody in this repo designed.
Rendering MuJoCo images on a CPU runs at about 3 steps/s (figure from the issue), far too slow for collection, so observations carry
no images (``cameras = ()``) and the policy sees MetaWorld's 39-dim state.

How the underlying env is built (read from the installed metaworld 3.1 source, not its docs):

* One env class per task from ``metaworld.env_dict.ALL_V3_ENVIRONMENTS``, made goal-observable (the last 3
  state entries are the goal, as in MetaWorld's MT1 benchmark) and with the task "set" directly instead of
  through a pickled `Task`, so each reset can draw a new object/goal placement.
* MetaWorld's ``reset(seed=...)`` ignores its seed, and the default task sampler draws from numpy's global
  RNG. Here every ``reset(seed)`` calls the env's own ``seed(seed)`` and switches the sampler to the env's
  seeded generator (``seeded_rand_vec``), and clears MuJoCo's solver state (``mj_resetData``), so an
  episode depends on its seed alone: the same seed gives a bit-identical observation sequence under the same
  actions, whatever ran before, and the global numpy RNG is never touched.
* The expert is ``metaworld.policies.ENV_POLICY_MAP[task]``, fed the env's float64 observation.

State layout (float32, 39): ``[0:3]`` hand xyz, ``[3]`` gripper opening in [0, 1], ``[4:18]`` object pose(s)
(xyz + quaternion, zero-padded), ``[18:36]`` the same 18 values one step earlier, ``[36:39]`` the goal xyz.
Actions (4): hand dx, dy, dz (scaled by MetaWorld to 1 cm per unit) and gripper effort, clipped to [-1, 1].
"""

import dataclasses
from typing import Any
import warnings

from metaworld import env_dict
from metaworld import policies
import mujoco
import numpy as np

from openpi.sim import base

STATE_DIM = 39
ACTION_DIM = 4


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What this module adds to a MetaWorld task: the instruction, the step limit and how progress behaves.

    ``max_steps`` is at least 1.6 times the longest noise-free expert episode over seeds 0-199 (push-v3's
    seed 52 excepted, see `TASK_SPECS`), so the expert (and a policy or a noisy expert that dawdles) has room,
    while a failed episode ends long before MetaWorld's own 500-step horizon. ``reach_object`` says whether
    the hand must first get to the object (everything but ``reach-v3``, where the hand itself must reach the
    goal); see `MetaWorldEnv.progress`.

    ``expert_stall_steps``: the noise-free expert's `progress` gains at least 1 cm over every window of this
    many steps (measured over seeds 0-199, push-v3's seed 52 excepted). The expert's path is not straight (it
    rises over the drawer before pushing it, slows down as it nears a target), so an operator whose stall
    window is shorter than this at ``min_progress=0.01`` would take over from a perfect demonstrator.
    """

    prompt: str
    max_steps: int
    expert_stall_steps: int
    reach_object: bool = True


# Tasks whose scripted policy reliably succeeds. Measured over seeds 0-199 (noise-free expert; longest episode in
# brackets): 100 % for all but push-v3, 99.5 % (seed 52 flips the puck and needs 211 steps; otherwise <= 71).
TASK_SPECS: dict[str, TaskSpec] = {
    "reach-v3": TaskSpec("move the gripper to the goal", 150, expert_stall_steps=35, reach_object=False),  # [89]
    "push-v3": TaskSpec("push the puck to the goal", 150, expert_stall_steps=20),  # [71]
    "pick-place-v3": TaskSpec("pick up the puck and place it at the goal", 150, expert_stall_steps=6),  # [63]
    "drawer-open-v3": TaskSpec("open the drawer", 200, expert_stall_steps=36),  # [92]
    "drawer-close-v3": TaskSpec("close the drawer", 150, expert_stall_steps=57),  # [79]
    "button-press-topdown-v3": TaskSpec("press the button down from above", 150, expert_stall_steps=5),  # [75]
    "window-open-v3": TaskSpec("slide the window open", 200, expert_stall_steps=24),  # [96]
}
TASKS = tuple(TASK_SPECS)


class MetaWorldEnv:
    """One MetaWorld v3 task as a `SimEnv` (see the module docstring for the state, actions and seeding).

    ``seed`` is the episode the env is placed in at construction (so a freshly made env is usable and its
    sampler is seeded from the start); every later ``reset(seed)`` re-seeds it. ``max_steps`` overrides the
    task's step limit (`TASK_SPECS`). An episode ends on MetaWorld's own success test (``info["success"]``)
    or at the step limit, which counts as a failure.
    """

    env_name = "metaworld"
    action_dim = ACTION_DIM
    state_dim = STATE_DIM
    cameras: tuple[str, ...] = ()

    def __init__(self, task: str = "push-v3", *, seed: int = 0, max_steps: int | None = None):
        if task not in TASK_SPECS:
            raise base.SimError(
                f"The metaworld env has no task {task!r}; choose one of {', '.join(TASKS)} "
                f"(tasks whose scripted policy reliably succeeds)."
            )
        spec = TASK_SPECS[task]
        max_steps = spec.max_steps if max_steps is None else int(max_steps)
        if max_steps < 1:
            raise base.SimError(
                f"max_steps must be at least 1, got {max_steps}; the default for {task} is {spec.max_steps}."
            )
        self.task = task
        self.prompt = spec.prompt
        self.max_steps = max_steps
        self._reach_object = spec.reach_object
        # The operator's stall rule in this task's units (`Operator.for_env`): 1 cm of progress over a window longer
        # than the noise-free expert ever needs, so it never takes over from a perfect demonstrator.
        self.operator_settings = {"stall_steps": spec.expert_stall_steps + 5, "min_progress": 0.01}

        env = env_dict.ALL_V3_ENVIRONMENTS[task]()
        # Goal-observable, as MetaWorld's own MT1 does: the cached observation space decides whether the goal
        # survives the clipping in step(), so it has to be recomputed after the switch.
        env._partially_observable = False
        env.__dict__.pop("sawyer_observation_space", None)
        # Mark the task as set and let every reset draw a new placement from the env's own seeded generator.
        env._set_task_called = True
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        # Our step limit is the only one: MetaWorld raises once its own horizon is passed.
        env.max_path_length = max_steps
        # Resets move bodies and sites by editing the *model* (e.g. the drawer's position); keep the pristine
        # values so each reset starts from the same model (see `reset`).
        self._body_pos = env.model.body_pos.copy()
        self._site_pos = env.model.site_pos.copy()
        self._env = env
        self._policy = policies.ENV_POLICY_MAP[task]()

        self.done = True
        self.success = False
        self.outcome: str | None = None  # "success" or "timeout" once done
        self.num_steps = 0
        self._obs = np.zeros(STATE_DIM)
        self._obj_to_target = 0.0
        self.reset(seed)

    def reset(self, seed: int) -> dict[str, Any]:
        """Start the episode of `seed` (object and goal placement drawn from `seed` alone) and observe it."""
        env = self._env
        env.seed(int(seed))
        # MetaWorld's reset runs the task's reset_model twice (its own call, then gymnasium's after zeroing the
        # data); each settles the arm for 50 physics steps and only then moves the task's bodies by editing the
        # model, and the observation is read without recomputing positions, so MetaWorld's first observation
        # shows the drawer or window where the *first* draw put it, up to 10 cm from where it is. So: pristine
        # model and zeroed data before (nothing carries over from the previous episode, not even the solver's
        # warm-start), positions recomputed and the observation rebuilt after (the current frame twice, as
        # MetaWorld stacks it on reset).
        env.model.body_pos[:] = self._body_pos
        env.model.site_pos[:] = self._site_pos
        mujoco.mj_resetData(env.model, env.data)
        env.reset()
        mujoco.mj_forward(env.model, env.data)
        env._prev_obs = env._get_curr_obs_combined_no_goal()
        self._obs = np.asarray(env._get_obs(), dtype=np.float64)
        # MetaWorld's success distance before any step (its reward code is side-effect free for v3 envs).
        _, info = env.evaluate_state(self._obs, np.zeros(ACTION_DIM, dtype=np.float32))
        self._obj_to_target = float(info["obj_to_target"])
        self.done = False
        self.success = False
        self.outcome = None
        self.num_steps = 0
        return self._observe()

    def step(self, action: Any) -> dict[str, Any]:
        """Apply one action (clipped to [-1, 1]); the episode ends on MetaWorld's success or at `max_steps`."""
        if self.done:
            raise base.SimError(
                "step() was called on a finished (or never started) metaworld episode; call reset(seed) first."
            )
        a = base.check_action(action, ACTION_DIM, self.env_name)
        obs, _, _, _, info = self._env.step(a)
        self._obs = np.asarray(obs, dtype=np.float64)
        self._obj_to_target = float(info["obj_to_target"])
        self.num_steps += 1
        if info["success"]:
            self.done, self.success, self.outcome = True, True, "success"
        elif self.num_steps >= self.max_steps:
            self.done, self.outcome = True, "timeout"
        return self._observe()

    def expert_action(self) -> np.ndarray:
        """MetaWorld's scripted policy for this task, on the current observation, clipped to [-1, 1]."""
        with warnings.catch_warnings():
            # The policies warn on every large proportional response ("Constant(s) may be too high"); the env
            # clips it anyway, and so do we.
            warnings.simplefilter("ignore", UserWarning)
            action = self._policy.get_action(self._obs)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    def idle_action(self) -> np.ndarray:
        """The scripted expert's hesitation: the hand holds still and the grip stays as the expert has it.

        The generic idle action (all zeros) would also set the gripper effort to 0, which drops a grasped
        puck; a hesitating demonstrator pauses, it does not let go.
        """
        action = self.expert_action()
        action[:3] = 0.0
        return action

    def distractor_action(self, index: int) -> np.ndarray:
        """The scripted expert's wrong way: the expert's hand motion reversed, with the expert's grip.

        MetaWorld's tasks have no distractor object, so "wrong" means away from where the expert is heading
        (`index` is unused). The grip is kept for the same reason as in `idle_action`.
        """
        del index
        action = self.expert_action()
        action[:3] = -action[:3]
        return action

    def progress(self) -> float:
        """Minus the remaining distance: hand to object plus object to goal (hand to goal for ``reach-v3``).

        The object-to-goal part is MetaWorld's own success distance (``info["obj_to_target"]``, the quantity its
        success test thresholds: the puck's distance to the goal, the drawer handle's or window handle's
        distance to its end position, the button's depth), so progress is highest exactly where success is.
        The hand-to-object part (hand xyz to the object's observed position) makes the approach count as
        progress too, so the operator's stall rule does not fire while the expert is still reaching.
        """
        if not self._reach_object:
            return -self._obj_to_target
        hand_to_object = float(np.linalg.norm(self._obs[0:3] - self._obs[4:7]))
        return -(hand_to_object + self._obj_to_target)

    def unsafe(self, action: Any) -> bool:
        """Always False: no action can leave MetaWorld's safe set.

        MetaWorld clips the hand's target to its workspace box itself, so no action can take the arm out of
        the workspace, and these tasks have no wrong object to touch (unlike the tabletop's other buttons).
        Anything else (knocking the puck away) shows up as a stall in `progress`, which the operator handles.
        """
        del action
        return False

    def _observe(self) -> dict[str, Any]:
        return {"images": {}, "state": self._obs.astype(np.float32), "prompt": self.prompt}
