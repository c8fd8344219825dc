"""The wire protocol, checked from outside: `scripts/serve_policy.py policy:dummy` runs as its own process and
this test talks to it with nothing but `websockets`, `msgpack` and raw sockets (no code shared with the server).

What a robot running openpi's client relies on:
  - first frame after the handshake: a binary msgpack map (metadata);
  - request: a binary msgpack map; numpy arrays as {b"__ndarray__": True, b"data", b"dtype", b"shape"} maps;
  - reply: a binary msgpack map with `actions` in the same encoding, `policy_timing` and `server_timing`;
  - errors: a text frame (openpi's client raises on any text frame); ours keeps the connection open;
  - no permessage-deflate even when the client offers it; `GET /healthz` -> 200.
"""

from __future__ import annotations

import os
import pathlib
import queue
import re
import socket
import subprocess
import sys
import threading

import msgpack
import numpy as np
import pytest
import websockets.sync.client

REPO = pathlib.Path(__file__).resolve().parents[1]
HORIZON = 50  # debug_pi06's action horizon (openpi's default)


def _ndarray_map(array: np.ndarray) -> dict:
    return {b"__ndarray__": True, b"data": array.tobytes(), b"dtype": array.dtype.str, b"shape": list(array.shape)}


def _yam_request(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    cams = ("cam_high", "cam_left_wrist", "cam_right_wrist")
    obs = {
        "images": {c: _ndarray_map(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)) for c in cams},
        "state": _ndarray_map(rng.uniform(-1, 1, 14).astype(np.float32)),
        "prompt": "pick up the vial and place it in the rack",
        "adv_ind": "positive",
    }
    return msgpack.packb(obs, use_bin_type=True)


@pytest.fixture(scope="module")
def port(tiny_spm_model, tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k != "OPENPI_API_KEY"}
    # On a GPU machine this test process may already hold most of the device memory; the server needs little.
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "serve_policy.py"),
        "policy:dummy",
        "--policy.config=debug_pi06",
        "--port=0",
        "--num-steps=2",
        f"--tokenizer-path={tiny_spm_model}",
    ]
    # Its own working directory: no local assets/ or checkpoints/ leak in.
    proc = subprocess.Popen(
        cmd, cwd=tmp_path_factory.mktemp("serve"), env=env, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=300)
            if not line:
                pytest.fail("serve_policy.py exited before listening:\n" + "".join(log))
            match = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line)
            if match:
                break
        yield int(match.group(1))
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    # SIGTERM (docker stop) is a clean shutdown.
    assert code == 0 and any("Stopped." in line for line in log), "".join(log[-20:])


def _connect(port: int, **kwargs):
    return websockets.sync.client.connect(f"ws://127.0.0.1:{port}", max_size=None, **kwargs)


def test_metadata_frame_first_and_canonical(port):
    with _connect(port) as ws:
        raw = ws.recv(timeout=30)
    assert isinstance(raw, bytes)
    metadata = msgpack.unpackb(raw)
    assert metadata["config"] == "debug_pi06"
    assert metadata["model_type"] == "pi06"
    assert metadata["action_horizon"] == HORIZON
    # Plain msgpack with the binary type on: re-packing the decoded map gives back the very same bytes.
    assert msgpack.packb(metadata, use_bin_type=True) == raw


def test_request_reply_bytes(port):
    with _connect(port) as ws:
        ws.recv(timeout=30)
        ws.send(_yam_request())
        raw = ws.recv(timeout=60)
    assert isinstance(raw, bytes), raw
    reply = msgpack.unpackb(raw)
    assert {"actions", "policy_timing", "server_timing"} <= set(reply)

    actions = reply["actions"]
    assert actions == {
        b"__ndarray__": True,
        b"data": actions[b"data"],
        b"dtype": "<f4",
        b"shape": [HORIZON, 14],
    }
    assert len(actions[b"data"]) == HORIZON * 14 * 4
    assert np.isfinite(np.frombuffer(actions[b"data"], "<f4")).all()
    # The extension map byte by byte: fixmap(4); bin8 "__ndarray__" -> true; bin8 "data" -> bin16(2800) ...
    header = b"\x84\xc4\x0b__ndarray__\xc3\xc4\x04data\xc5" + (HORIZON * 14 * 4).to_bytes(2, "big")
    trailer = b"\xc4\x05dtype\xa3<f4\xc4\x05shape\x92" + bytes([HORIZON, 14])
    start = raw.index(header)
    assert raw[start + len(header) + HORIZON * 14 * 4 :].startswith(trailer)

    timing = reply["server_timing"]
    assert isinstance(timing["infer_ms"], float) and timing["infer_ms"] > 0
    assert "prev_total_ms" not in timing  # first request on this connection
    assert reply["policy_timing"]["infer_ms"] > 0
    assert msgpack.packb(reply, use_bin_type=True) == raw


def test_error_is_a_text_frame_and_connection_stays_open(port):
    with _connect(port) as ws:
        ws.recv(timeout=30)
        ws.send(b"\x93\x01")  # an array header promising 3 items, then only one: truncated msgpack
        error = ws.recv(timeout=30)
        assert isinstance(error, str)
        assert error.startswith("Bad request: ") and "msgpack" in error
        ws.send(_yam_request(1))
        first = msgpack.unpackb(ws.recv(timeout=60))
        ws.send(_yam_request(2))
        second = msgpack.unpackb(ws.recv(timeout=60))
    assert first["actions"][b"shape"] == [HORIZON, 14]
    assert second["server_timing"]["prev_total_ms"] > 0


def test_no_compression_even_when_offered(port):
    with _connect(port, compression="deflate") as ws:
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        ws.recv(timeout=30)


def test_healthz_over_raw_http(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := sock.recv(4096):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"OK\n")
