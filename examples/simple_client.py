"""Query a policy server with random YAM-shaped observations and report latency.

    uv run scripts/serve_policy.py policy:dummy          # in one terminal
    uv run examples/simple_client.py --num-requests 20   # in another

Useful to check that a server is reachable from the robot computer, and how long a round trip takes over
the real network, before wiring up a robot. Needs only the `openpi-client` package (numpy, msgpack,
websockets).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import tyro

from openpi_client import image_tools
from openpi_client import websocket_client_policy

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


@dataclasses.dataclass(frozen=True)
class Args:
    host: str = "127.0.0.1"
    """Server address (or a full ws:// URI)."""
    port: int = 8000
    api_key: str | None = None
    """Sent as `Authorization: Api-Key <key>` when the server needs one."""
    num_requests: int = 10
    prompt: str = "pick up the vial and place it in the rack"
    adv_ind: str = "positive"
    """RECAP indicator sent with each observation (positive / negative / none)."""
    camera_height: int = 480
    camera_width: int = 640
    """Raw camera resolution; frames are resized to 224x224 on the client, as a robot should."""
    seed: int = 0


def random_observation(args: Args, rng: np.random.Generator) -> dict:
    """What a YAM robot sends: three 224x224 uint8 cameras, a 14-dim state, the prompt and the indicator."""
    images = {}
    for name in CAMERAS:
        frame = rng.integers(0, 256, (args.camera_height, args.camera_width, 3), dtype=np.uint8)
        images[name] = image_tools.convert_to_uint8(image_tools.resize_with_pad(frame, 224, 224))
    return {
        "images": images,
        "state": rng.uniform(-1, 1, 14).astype(np.float32),
        "prompt": args.prompt,
        "adv_ind": args.adv_ind,
    }


def main(args: Args) -> dict[str, float]:
    """Runs the requests; returns the median round-trip and server-side times in ms."""
    rng = np.random.default_rng(args.seed)
    round_trips, server_ms = [], []
    with websocket_client_policy.WebsocketClientPolicy(args.host, args.port, api_key=args.api_key) as client:
        logging.info("Server metadata: %s", client.get_server_metadata())
        for i in range(args.num_requests):
            obs = random_observation(args, rng)
            start = time.monotonic()
            reply = client.infer(obs)
            round_trips.append((time.monotonic() - start) * 1000)
            server_ms.append(reply["server_timing"]["infer_ms"])
            logging.info(
                "request %d: actions %s, round trip %.1f ms, server %.1f ms",
                i,
                reply["actions"].shape,
                round_trips[-1],
                server_ms[-1],
            )
    summary = {"round_trip_ms_p50": float(np.median(round_trips)), "server_infer_ms_p50": float(np.median(server_ms))}
    logging.info("median round trip %.1f ms, median server infer %.1f ms", *summary.values())
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(tyro.cli(Args))
