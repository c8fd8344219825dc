"""A YAM control loop driven by a remote pi0.6 policy, in the shape a robot integration takes.

    uv run scripts/serve_policy.py policy:checkpoint --policy.config=pi06_yam_vial_30fps_infer \\
        --policy.dir=checkpoints/pi06_yam_vial_30fps/run/29999 --host 0.0.0.0
    uv run examples/yam_client.py --host <server> --steps 300

Every control tick (30 Hz) the loop reads the robot, resizes the three camera frames to 224x224 on the
robot side (a 640x480 frame is 900 kB raw, 150 kB resized), and asks an `ActionChunkBroker` for the next
action. The broker queries the server only every `replan_steps` ticks and replays the returned chunk in
between, so inference latency is hidden as long as it is shorter than `replan_steps / control_hz`.

Every observation carries ``adv_ind="positive"``: a pi0.6 policy is asked for the behaviour it labelled as
better than average (the server assumes the same when the key is missing).

`Robot` is the interface to implement for real hardware. `SimulatedYam` stands in for it here (random
camera frames, joints that follow the commanded actions) so the loop can be run end to end without a robot.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Protocol

import numpy as np
import tyro

from openpi_client import action_chunk_broker
from openpi_client import image_tools
from openpi_client import websocket_client_policy

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
STATE_DIM = 14  # per arm: 6 joints + gripper


class Robot(Protocol):
    """What the loop needs from a YAM bimanual robot."""

    def get_observation(self) -> dict:
        """{"images": {camera: HxWx3 uint8}, "state": float32[14]}."""
        ...

    def apply_action(self, action: np.ndarray) -> None:
        """Commands 14 joint/gripper targets."""
        ...


class SimulatedYam:
    """Stand-in robot for running the loop without hardware: noise images, joints that track the commands."""

    def __init__(self, height: int = 480, width: int = 640, seed: int = 0):
        self._rng = np.random.default_rng(seed)
        self._shape = (height, width, 3)
        self.state = np.zeros(STATE_DIM, np.float32)

    def get_observation(self) -> dict:
        images = {name: self._rng.integers(0, 256, self._shape, dtype=np.uint8) for name in CAMERAS}
        return {"images": images, "state": self.state.copy()}

    def apply_action(self, action: np.ndarray) -> None:
        target = np.asarray(action, np.float32)
        if target.shape != (STATE_DIM,):
            raise ValueError(f"YAM actions have {STATE_DIM} dims, got shape {target.shape}.")
        self.state += 0.5 * (target - self.state)


@dataclasses.dataclass(frozen=True)
class Args:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    prompt: str = "pick up the vial and place it in the rack"
    steps: int = 300
    """Control ticks to run."""
    control_hz: float = 30.0
    replan_steps: int | None = None
    """Actions replayed per chunk; default: the server's action horizon (from its metadata), capped at 25."""
    adv_ind: str = "positive"


def to_request(raw: dict, prompt: str, adv_ind: str) -> dict:
    """Robot observation -> the openpi/YAM request (224x224 uint8 cameras)."""
    images = {
        name: image_tools.convert_to_uint8(image_tools.resize_with_pad(frame, 224, 224))
        for name, frame in raw["images"].items()
    }
    return {"images": images, "state": np.asarray(raw["state"], np.float32), "prompt": prompt, "adv_ind": adv_ind}


def run(args: Args, robot: Robot) -> dict[str, float]:
    """Runs the control loop; returns how many chunks were requested and the worst tick overrun in ms."""
    client = websocket_client_policy.WebsocketClientPolicy(args.host, args.port, api_key=args.api_key)
    horizon = int(client.get_server_metadata().get("action_horizon", 10))
    replan = args.replan_steps or min(horizon, 25)
    broker = action_chunk_broker.ActionChunkBroker(client, action_horizon=replan)
    period = 1.0 / args.control_hz
    chunks, worst_overrun_ms = 0, 0.0
    try:
        next_tick = time.monotonic()
        for step in range(args.steps):
            if step % replan == 0:
                chunks += 1
            result = broker.infer(to_request(robot.get_observation(), args.prompt, args.adv_ind))
            robot.apply_action(result["actions"])
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                worst_overrun_ms = max(worst_overrun_ms, -delay * 1000)
                next_tick = time.monotonic()  # do not try to catch up with a burst of ticks
    finally:
        client.close()
    logging.info(
        "%d ticks, %d chunks of %d actions, worst overrun %.1f ms", args.steps, chunks, replan, worst_overrun_ms
    )
    return {"chunks": chunks, "replan_steps": replan, "worst_overrun_ms": worst_overrun_ms}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run(tyro.cli(Args), SimulatedYam())
