"""The embedded tabletop world: press the button of the prompted colour (numpy only, no display, no GL).

Why this world: closing the RECAP loop (policy acts, operator corrects, success is measured) needs a task
that is cheap enough to run hundreds of episodes on a CPU, yet where the policy really has to use both
language and vision. Three coloured buttons lie at random places on a table seen from above; the prompt
names the colour to press. The buttons' positions are *not* in the state, so only the images tell the
policy where to go, and only the prompt tells it which button is right.

World (arena ``[0, 1]^2``, world ``x`` = image column, world ``y`` = image row, origin at the top-left):

* Buttons red, green, blue (always in that order) are discs of radius ``button_radius`` with centres in
  ``[0.15, 0.85]^2``, pairwise at least ``0.3`` apart. The gripper is a point starting in ``[0.05, 0.95]^2``
  at least ``0.25`` from every button's centre. ``reset(seed)`` draws all of it from ``seed`` alone, so the
  three tasks share the same layout for a given seed.
* Action ``(x, y, press)`` in ``[-1, 1]^3``. ``press > 0`` is a press stroke: the gripper presses where it
  is and does not move this step (so whether a press is safe depends only on where the gripper is now).
  Pressing inside the target disc is a success, inside another disc a failure, on the bare table nothing
  happens. Otherwise the gripper moves toward the position ``(x, y)`` (``[-1, 1]`` spans the arena) by at most
  ``speed`` (``action_mode="position"``, the default: position control, like a robot's joint targets), or
  by ``speed * (x, y)`` with ``action_mode="delta"`` (velocity control), clipped to the arena. Reaching
  ``max_steps`` without success is a failure. Position control is what makes the task learnable for a
  small policy in minutes: the action is where the button is in the image, not its offset from the gripper.
* State: float32 ``[x, y, last_press]`` (``last_press`` is 1 when the previous action was a press stroke).
* Cameras: ``"top"`` is the whole arena, ``image_size`` pixels square; ``"wrist"`` is a window of half-width
  ``wrist_half_width`` centred on the gripper at the same resolution (black outside the arena). The gripper
  is a white cross. Discs are drawn from precomputed pixel-centre grids; the top view's static part (table
  and buttons) is drawn once per episode.

Speed (one shared 2-core CPU under load, 32 px): ~14k `step`/s with the top camera, ~7k/s with top and
wrist, ~24k/s state-only; ~1.2k `reset`/s; ~65k `expert_action`/s. An expert episode is ~9 steps on average.
"""

import difflib
from typing import Any

import numpy as np

from openpi.sim import base

TASKS = ("press_red", "press_green", "press_blue")
ACTION_MODES = ("position", "delta")
COLORS = ("red", "green", "blue")
CAMERAS = ("top", "wrist")

BUTTON_RGB = np.array([[220, 40, 40], [40, 190, 60], [50, 80, 230]], dtype=np.uint8)
TABLE_RGB = np.array([110, 95, 80], dtype=np.uint8)
OUTSIDE_RGB = np.array([0, 0, 0], dtype=np.uint8)
GRIPPER_RGB = np.array([255, 255, 255], dtype=np.uint8)

BUTTON_BOX = (0.15, 0.85)
MIN_BUTTON_GAP = 0.3
GRIPPER_BOX = (0.05, 0.95)
MIN_GRIPPER_CLEARANCE = 0.25


class TabletopEnv:
    """Press the prompted button; implements `openpi.sim.base.SimEnv` (see the module docstring for the world).

    The noise-free expert heads straight for the target's centre at full speed without overshooting and
    presses once within ``press_fraction * button_radius`` of the centre (a margin, so that an imitating
    policy that is slightly off still presses inside the disc).
    """

    env_name = "tabletop"
    action_dim = 3
    state_dim = 3

    def __init__(
        self,
        task: str = "press_red",
        *,
        cameras: tuple[str, ...] = ("top",),
        image_size: int = 32,
        max_steps: int = 40,
        speed: float = 0.06,
        button_radius: float = 0.08,
        press_fraction: float = 0.5,
        wrist_half_width: float = 0.25,
        action_mode: str = "position",
    ):
        if task not in TASKS:
            close = difflib.get_close_matches(task, TASKS, n=1, cutoff=0.0)
            raise base.SimError(
                f"The tabletop env has no task {task!r}; did you mean {close[0]!r}? (tasks: {', '.join(TASKS)})"
            )
        cameras = tuple(cameras)
        bad = [c for c in cameras if c not in CAMERAS]
        if bad or len(set(cameras)) != len(cameras):
            raise base.SimError(
                f"The tabletop env cannot give cameras {cameras!r}; choose distinct names from {CAMERAS!r}."
            )
        if image_size < 8:
            raise base.SimError(f"image_size must be at least 8 pixels, got {image_size}; use e.g. 32.")
        if max_steps < 1:
            raise base.SimError(f"max_steps must be at least 1, got {max_steps}.")
        if not 0 < speed <= 0.5 or not 0 < button_radius < MIN_BUTTON_GAP / 2 or not 0 < press_fraction <= 1:
            raise base.SimError(
                f"Need 0 < speed <= 0.5, 0 < button_radius < {MIN_BUTTON_GAP / 2} and 0 < press_fraction <= 1; "
                f"got speed={speed}, button_radius={button_radius}, press_fraction={press_fraction}."
            )
        if action_mode not in ACTION_MODES:
            raise base.SimError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}.")
        self.action_mode = action_mode
        self.task = task
        self.color = task.removeprefix("press_")
        self.target = COLORS.index(self.color)
        self.prompt = f"press the {self.color} button"
        self.cameras = cameras
        self.image_size = image_size
        self.max_steps = max_steps
        self.speed = float(speed)
        self.button_radius = float(button_radius)
        self.press_radius = float(button_radius * press_fraction)
        self.wrist_half_width = float(wrist_half_width)

        # Pixel-centre coordinates: the top view's in world units, the wrist view's as offsets from the gripper.
        centres = (np.arange(image_size) + 0.5) / image_size
        self._top_coords = centres
        self._wrist_offsets = (2.0 * centres - 1.0) * self.wrist_half_width
        self._arm = max(1, image_size // 16)

        self.buttons = np.zeros((3, 2))
        self.gripper = np.zeros(2)
        self.done = True
        self.success = False
        self.outcome: str | None = None  # "success", "wrong_button" or "timeout" once done
        self.num_steps = 0
        self._last_press = 0.0
        self._top_base: np.ndarray | None = None

    # --- the episode -------------------------------------------------------------------------------------

    def reset(self, seed: int, *, buttons: Any = None, gripper: Any = None) -> dict[str, Any]:
        """Start the episode of `seed`; `buttons` ([3, 2], red/green/blue) and `gripper` ([2]) override the layout.

        The overrides exist so that tests and demonstrations can place things exactly; the seed still decides
        whatever is not overridden.
        """
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise base.SimError(f"The tabletop env's seed must be a non-negative integer, got {seed!r}.")
        rng = np.random.default_rng(seed)
        if buttons is None:
            self.buttons = _sample_buttons(rng)
        else:
            self.buttons = _checked_points(buttons, (3, 2), "buttons")
        if gripper is None:
            self.gripper = _sample_gripper(rng, self.buttons)
        else:
            self.gripper = _checked_points(gripper, (2,), "gripper")
        self.done = False
        self.success = False
        self.outcome = None
        self.num_steps = 0
        self._last_press = 0.0
        self._top_base = self._render_static() if "top" in self.cameras else None
        return self._observe()

    def step(self, action: Any) -> dict[str, Any]:
        """Apply one action (clipped to [-1, 1]); see the module docstring for what a press does."""
        if self.done:
            raise base.SimError(
                "step() was called on a finished (or never started) tabletop episode; call reset(seed) first."
            )
        a = base.check_action(action, self.action_dim, self.env_name)
        self.num_steps += 1
        if a[2] > 0:
            self._last_press = 1.0
            pressed = self._button_under_gripper()
            if pressed == self.target:
                self.done, self.success, self.outcome = True, True, "success"
            elif pressed is not None:
                self.done, self.outcome = True, "wrong_button"
        else:
            self._last_press = 0.0
            self.gripper = self._moved(a)
        if not self.done and self.num_steps >= self.max_steps:
            self.done, self.outcome = True, "timeout"
        return self._observe()

    # --- the expert, progress and safety ------------------------------------------------------------------

    def expert_action(self) -> np.ndarray:
        """Straight to the target's centre at full speed (no overshoot); press once close enough."""
        return self._action_towards(self.target)

    def distractor_action(self, index: int) -> np.ndarray:
        """The expert's action for a wrong button (distractor `index` modulo 2): the scripted expert's wrong way."""
        others = [i for i in range(3) if i != self.target]
        return self._action_towards(others[index % len(others)])

    def idle_action(self) -> np.ndarray:
        """Stay put without pressing (the scripted expert's hesitation; a zero press would be ambiguous)."""
        if self.action_mode == "delta":
            return np.array([0.0, 0.0, -1.0], dtype=np.float32)
        x, y = self.gripper * 2.0 - 1.0
        return np.array([x, y, -1.0], dtype=np.float32)

    def progress(self) -> float:
        """Negative distance from the gripper to the target button's centre."""
        return -float(np.linalg.norm(self.buttons[self.target] - self.gripper))

    def unsafe(self, action: Any) -> bool:
        """True when `action` would press a wrong button or would move the gripper out of the arena."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        if a[2] > 0:
            pressed = self._button_under_gripper()
            return pressed is not None and pressed != self.target
        moved = self.gripper + self.speed * a[:2] if self.action_mode == "delta" else self._moved(a)
        return bool(np.any(moved < 0.0) or np.any(moved > 1.0))

    def _moved(self, a: np.ndarray) -> np.ndarray:
        """Where a move action takes the gripper (clipped to the arena)."""
        a = np.asarray(a[:2], dtype=np.float64)
        if self.action_mode == "delta":
            return np.clip(self.gripper + self.speed * a, 0.0, 1.0)
        delta = (a + 1.0) / 2.0 - self.gripper
        dist = float(np.linalg.norm(delta))
        if dist > self.speed:
            delta = delta * (self.speed / dist)
        return np.clip(self.gripper + delta, 0.0, 1.0)

    def world_to_pixel(self, xy: Any) -> tuple[int, int]:
        """(row, col) of the top view's pixel that contains world point `xy`."""
        x, y = np.clip(np.asarray(xy, dtype=np.float64), 0.0, 1.0 - 1e-9)
        return int(y * self.image_size), int(x * self.image_size)

    def _action_towards(self, index: int) -> np.ndarray:
        delta = self.buttons[index] - self.gripper
        dist = float(np.linalg.norm(delta))
        if self.action_mode == "position":
            x, y = self.buttons[index] * 2.0 - 1.0
            return np.array([x, y, 1.0 if dist <= self.press_radius else -1.0], dtype=np.float32)
        if dist <= self.press_radius:
            return np.array([0.0, 0.0, 1.0], dtype=np.float32)
        move = delta / self.speed
        norm = float(np.linalg.norm(move))
        if norm > 1.0:
            move = move / norm
        return np.array([move[0], move[1], -1.0], dtype=np.float32)

    def _button_under_gripper(self) -> int | None:
        dists = np.linalg.norm(self.buttons - self.gripper, axis=1)
        inside = np.flatnonzero(dists <= self.button_radius)
        return int(inside[np.argmin(dists[inside])]) if inside.size else None

    # --- rendering ----------------------------------------------------------------------------------------

    def _observe(self) -> dict[str, Any]:
        images = {}
        for camera in self.cameras:
            images[camera] = self._render_top() if camera == "top" else self._render_wrist()
        state = np.array([self.gripper[0], self.gripper[1], self._last_press], dtype=np.float32)
        return {"images": images, "state": state, "prompt": self.prompt}

    def _draw_buttons(self, image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> None:
        r2 = self.button_radius**2
        for colour, (bx, by) in zip(BUTTON_RGB, self.buttons, strict=True):
            dx2 = (xs - bx) ** 2
            dy2 = (ys - by) ** 2
            image[dy2[:, None] + dx2[None, :] <= r2] = colour

    def _render_static(self) -> np.ndarray:
        size = self.image_size
        image = np.empty((size, size, 3), dtype=np.uint8)
        image[:] = TABLE_RGB
        self._draw_buttons(image, self._top_coords, self._top_coords)
        return image

    def _draw_cross(self, image: np.ndarray, row: int, col: int) -> None:
        arm, size = self._arm, self.image_size
        image[max(row - arm, 0) : min(row + arm + 1, size), col] = GRIPPER_RGB
        image[row, max(col - arm, 0) : min(col + arm + 1, size)] = GRIPPER_RGB

    def _render_top(self) -> np.ndarray:
        assert self._top_base is not None
        image = self._top_base.copy()
        self._draw_cross(image, *self.world_to_pixel(self.gripper))
        return image

    def _render_wrist(self) -> np.ndarray:
        size = self.image_size
        xs = self.gripper[0] + self._wrist_offsets
        ys = self.gripper[1] + self._wrist_offsets
        image = np.empty((size, size, 3), dtype=np.uint8)
        image[:] = TABLE_RGB
        self._draw_buttons(image, xs, ys)
        image[(ys < 0) | (ys > 1)] = OUTSIDE_RGB
        image[:, (xs < 0) | (xs > 1)] = OUTSIDE_RGB
        self._draw_cross(image, size // 2, size // 2)
        return image


def _sample_buttons(rng: np.random.Generator) -> np.ndarray:
    """Three centres in BUTTON_BOX, pairwise >= MIN_BUTTON_GAP apart (rejection sampling; ~3 tries on average)."""
    low, high = BUTTON_BOX
    while True:
        points = rng.uniform(low, high, size=(3, 2))
        gaps = np.linalg.norm(points[:, None] - points[None, :], axis=-1)[np.triu_indices(3, 1)]
        if np.all(gaps >= MIN_BUTTON_GAP):
            return points


def _sample_gripper(rng: np.random.Generator, buttons: np.ndarray) -> np.ndarray:
    low, high = GRIPPER_BOX
    while True:
        point = rng.uniform(low, high, size=2)
        if np.all(np.linalg.norm(buttons - point, axis=1) >= MIN_GRIPPER_CLEARANCE):
            return point


def _checked_points(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    points = np.asarray(value, dtype=np.float64)
    if points.shape != shape or not np.all((points >= 0) & (points <= 1)):
        raise base.SimError(f"`{name}` must be an array of shape {shape} inside [0, 1]^2, got {value!r}.")
    return points.copy()
