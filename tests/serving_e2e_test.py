"""End-to-end serving over 127.0.0.1: a real dummy-size pi0.6 Policy behind the websocket server, our client.

One server (one jit compile) is shared by the module; the API-key server wraps the same Policy.
"""

from __future__ import annotations

import dataclasses
import http.client
import importlib.util
import pathlib
import socket
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
import websockets.exceptions
import websockets.sync.client

from openpi.policies import policy as _policy
from openpi.policies import policy_config
from openpi.policies import yam_policy
from openpi.serving import websocket_policy_server as wps
from openpi.shared import normalize
from openpi.training import checkpoints as _checkpoints
from openpi.training import config as _config
from openpi_client import msgpack_numpy
from openpi_client import websocket_client_policy as wcp

ACTION_HORIZON = 10
MAX_REQUEST_BYTES = 2 * 2**20
ASSET_ID = "yam_test"


@pytest.fixture(scope="module")
def train_config(tiny_spm_model):
    config = _config.get_config("debug_pi06")
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, action_horizon=ACTION_HORIZON),
        data=dataclasses.replace(config.data, assets=_config.AssetsConfig(asset_id=ASSET_ID)),
        tokenizer_path=str(tiny_spm_model),
        policy_metadata={"robot": "yam"},
    )


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory, train_config):
    """A step written by the trainer's checkpoint code: <step>/params, train_state, assets/<asset_id>/norm_stats.json."""
    run_dir = tmp_path_factory.mktemp("ckpt") / train_config.name / "exp"
    mngr, _ = _checkpoints.initialize_checkpoint_dir(
        run_dir, keep_period=None, overwrite=False, resume=False, async_save=False
    )
    rng = np.random.default_rng(0)
    stats = {key: normalize.compute(rng.normal(size=(256, 14)).astype(np.float32)) for key in ("state", "actions")}
    _checkpoints.save(
        mngr,
        9,
        params=policy_config.random_params(train_config.model, seed=1),
        train_state={"step": np.int64(9)},
        norm_stats={ASSET_ID: stats},
    )
    mngr.wait_until_finished()
    mngr.close()
    return run_dir / "9"


@pytest.fixture(scope="module")
def policy(train_config, checkpoint_dir):
    return policy_config.create_trained_policy(train_config, checkpoint_dir, sample_kwargs={"num_steps": 3})


@pytest.fixture(scope="module")
def server(policy):
    srv = wps.WebsocketPolicyServer(
        policy, port=0, metadata=policy.metadata, max_request_bytes=MAX_REQUEST_BYTES
    ).start_in_thread()
    with srv:
        # Compile once here so every test measures steady-state serving.
        with wcp.WebsocketClientPolicy(port=srv.port, connect_timeout_s=30) as client:
            client.infer(yam_policy.make_yam_example())
        yield srv


def _obs(seed: int = 0, **overrides):
    obs = yam_policy.make_yam_example(np.random.default_rng(seed))
    obs.update(overrides)
    return obs


def test_client_receives_yam_actions(server):
    with wcp.WebsocketClientPolicy("127.0.0.1", server.port, connect_timeout_s=10) as client:
        metadata = client.get_server_metadata()
        assert metadata["robot"] == "yam" and metadata["action_horizon"] == ACTION_HORIZON
        assert metadata["config"] == "debug_pi06" and metadata["model_type"] == "pi06"
        assert metadata["checkpoint"] == "debug_pi06/exp/9"
        first = client.infer(_obs(1))
        second = client.infer(_obs(2, adv_ind="negative"))
    for reply in (first, second):
        assert reply["actions"].shape == (ACTION_HORIZON, 14)
        assert reply["actions"].dtype == np.float32
        assert np.isfinite(reply["actions"]).all()
        assert reply["policy_timing"]["infer_ms"] > 0
        assert reply["server_timing"]["infer_ms"] >= reply["policy_timing"]["infer_ms"]
    assert "prev_total_ms" not in first["server_timing"]
    assert second["server_timing"]["prev_total_ms"] > 0


def _garbage_cases():
    valid = msgpack_numpy.packb(_obs())
    return {
        "garbage": (b"\xc1\xff\x00 not msgpack at all", "not valid msgpack"),
        "truncated": (valid[: len(valid) // 2], "not valid msgpack"),
        "not_a_dict": (msgpack.packb([1, 2, 3]), "send one observation dict"),
        "text_frame": ("hello", "text frame"),
        "oversized": (b"\x00" * (MAX_REQUEST_BYTES + 1), "over this server's limit"),
        "bad_array_header": (
            msgpack.packb({"state": {b"__ndarray__": True, b"data": b"\x00" * 3, b"dtype": "<f4", b"shape": [14]}}),
            "needs 56 bytes",
        ),
    }


@pytest.mark.parametrize("case", sorted(_garbage_cases()))
def test_malformed_frames_get_error_and_connection_keeps_serving(server, case):
    payload, message = _garbage_cases()[case]
    with websockets.sync.client.connect(f"ws://127.0.0.1:{server.port}", compression=None, max_size=None) as ws:
        ws.recv()  # metadata
        ws.send(payload)
        reply = ws.recv(timeout=30)
        assert isinstance(reply, str), reply
        assert reply.startswith(wps.BAD_REQUEST_PREFIX) and message in reply
        assert "Traceback" not in reply and "\n" not in reply
        ws.send(msgpack_numpy.packb(_obs()))
        ok = msgpack_numpy.unpackb(ws.recv(timeout=30))
        assert ok["actions"].shape == (ACTION_HORIZON, 14)


def _without_camera(obs):
    images = dict(obs["images"])
    del images["cam_high"]
    return {**obs, "images": images}


@pytest.mark.parametrize(
    ("case", "mutate", "message"),
    [
        ("missing_image", _without_camera, "cam_high"),
        ("missing_images", lambda o: {k: v for k, v in o.items() if k != "images"}, "'images'"),
        ("missing_state", lambda o: {k: v for k, v in o.items() if k != "state"}, "'state'"),
        (
            "image_2d",
            lambda o: {**o, "images": {**o["images"], "cam_high": np.zeros((224, 224), np.uint8)}},
            "'images/cam_high' has shape (224, 224)",
        ),
        (
            "image_4_channels",
            lambda o: {**o, "images": {**o["images"], "cam_left_wrist": np.zeros((224, 224, 4), np.uint8)}},
            "cam_left_wrist",
        ),
        (
            "image_int64",
            lambda o: {**o, "images": {**o["images"], "cam_high": np.zeros((3, 224, 224), np.int64)}},
            "dtype int64",
        ),
        ("state_strings", lambda o: {**o, "state": np.array(["a"] * 14)}, "'state' has dtype <U1"),
        ("state_dim", lambda o: {**o, "state": np.zeros(9, np.float32)}, "14 dims"),
        ("bad_adv_ind", lambda o: {**o, "adv_ind": "great"}, "advantage indicator"),
    ],
)
def test_bad_observations_get_clear_error_and_connection_keeps_serving(server, case, mutate, message):
    with wcp.WebsocketClientPolicy(port=server.port, connect_timeout_s=10) as client:
        with pytest.raises(wcp.ServerError) as info:
            client.infer(mutate(_obs()))
        text = str(info.value)
        assert message in text, text
        assert "Traceback" not in text and wps.INTERNAL_ERROR_PREFIX not in text
        assert client.infer(_obs())["actions"].shape == (ACTION_HORIZON, 14)


def test_frame_over_hard_limit_closes_only_that_connection(server):
    with websockets.sync.client.connect(f"ws://127.0.0.1:{server.port}", compression=None, max_size=None) as ws:
        ws.recv()
        ws.send(b"\x00" * (2 * MAX_REQUEST_BYTES + 1))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            ws.recv(timeout=30)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    # Our client: the closed connection is an error for that request, and the next one reconnects by itself.
    with wcp.WebsocketClientPolicy(port=server.port, connect_timeout_s=10) as client:
        with pytest.raises(ConnectionError, match="closed"):
            client.infer({**_obs(), "blob": np.zeros(2 * MAX_REQUEST_BYTES + 1, np.uint8)})
        assert client.infer(_obs())["actions"].shape == (ACTION_HORIZON, 14)


def _healthz(port: int) -> tuple[int, float]:
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        status = conn.getresponse().status
    finally:
        conn.close()
    return status, (time.monotonic() - start) * 1000


def test_concurrent_clients(server):
    n_clients, n_requests = 8, 50
    results: dict[int, list[tuple[int, int]]] = {}
    errors: list[BaseException] = []

    def run_client(i: int) -> None:
        try:
            with wcp.WebsocketClientPolicy(port=server.port, connect_timeout_s=30) as client:
                shapes = [client.infer(_obs(i * 1000 + j))["actions"].shape for j in range(n_requests)]
            results[i] = shapes
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run_client, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    latencies = []
    while any(t.is_alive() for t in threads) and len(latencies) < 40:
        status, ms = _healthz(server.port)
        assert status == 200
        latencies.append(ms)
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert sorted(results) == list(range(n_clients))
    assert all(shapes == [(ACTION_HORIZON, 14)] * n_requests for shapes in results.values())
    assert len(latencies) >= 5, "inference finished before /healthz could be probed"
    # Eight clients and this poller share the test process (and its GIL) with the server: a loose bound here;
    # the strict one is in test_healthz_answers_during_a_long_inference.
    assert sorted(latencies)[len(latencies) // 2] < 100, latencies


def test_healthz_and_timeouts_during_a_long_inference(train_config, checkpoint_dir):
    """A fresh policy's first request runs for seconds (tracing, compiling, 10 steps); /healthz must not wait,
    and a client with a short request timeout gives up cleanly and reconnects afterwards."""
    slow = policy_config.create_trained_policy(train_config, checkpoint_dir, sample_kwargs={"num_steps": 10})
    with wps.WebsocketPolicyServer(slow, port=0).start_in_thread() as srv:
        replies = []
        with (
            wcp.WebsocketClientPolicy(port=srv.port, connect_timeout_s=10) as client,
            wcp.WebsocketClientPolicy(port=srv.port, connect_timeout_s=10, request_timeout_s=0.3) as impatient,
        ):
            request = threading.Thread(target=lambda: replies.append(client.infer(_obs())))
            request.start()
            time.sleep(0.1)
            timed_out = False
            try:
                impatient.infer(_obs(1))  # queued behind the long request
            except TimeoutError as exc:
                timed_out = "did not answer within 0.3 s" in str(exc)
            latencies = []
            while request.is_alive() and len(latencies) < 40:
                status, ms = _healthz(srv.port)
                assert status == 200
                latencies.append(ms)
                time.sleep(0.02)
            request.join(timeout=300)
            # The late reply to the abandoned request must not be taken for this one's: a fresh connection.
            retry = impatient.infer(_obs(2))
            assert retry["actions"].shape == (ACTION_HORIZON, 14)
    infer_ms = replies[0]["server_timing"]["infer_ms"]
    if infer_ms < 1000:  # e.g. a persistent compilation cache made the first request fast
        pytest.skip(f"the first request took only {infer_ms:.0f} ms: too short to probe /healthz during it")
    assert timed_out
    # Only a client that gave up reconnects; had the first request been fast, the same connection (with its
    # prev_total_ms) would rightly have answered.
    assert "prev_total_ms" not in retry["server_timing"]
    # Several probes answered quickly while one request ran for over a second. A server running inference on
    # its event loop would have answered the first probe only after the request (so one probe, slow).
    assert len(latencies) >= 3 and sum(ms < 100 for ms in latencies) >= 0.9 * len(latencies), latencies
    assert max(latencies) < 1000, latencies


def test_client_waits_for_a_server_that_starts_later(policy):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connected = []

    def connect() -> None:
        connected.append(wcp.WebsocketClientPolicy(port=port, connect_timeout_s=60, retry_interval_s=0.1))

    waiter = threading.Thread(target=connect)
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and not connected
    with wps.WebsocketPolicyServer(policy, port=port, metadata={"late": True}).start_in_thread():
        waiter.join(timeout=60)
        assert connected and connected[0].get_server_metadata() == {"late": True}
        assert connected[0].infer(_obs())["actions"].shape == (ACTION_HORIZON, 14)
        connected[0].close()


def test_api_key(policy):
    with wps.WebsocketPolicyServer(policy, port=0, api_key="s3cret").start_in_thread() as srv:
        assert _healthz(srv.port)[0] == 200  # the health check needs no key
        with pytest.raises(wcp.AuthenticationError, match="api_key"):
            wcp.WebsocketClientPolicy(port=srv.port, connect_timeout_s=5)
        with pytest.raises(wcp.AuthenticationError, match="wrong"):
            wcp.WebsocketClientPolicy(port=srv.port, api_key="guess", connect_timeout_s=5)
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            websockets.sync.client.connect(f"ws://127.0.0.1:{srv.port}", additional_headers={"Authorization": "x"})
        assert info.value.response.status_code == 401
        with wcp.WebsocketClientPolicy(port=srv.port, api_key="s3cret", connect_timeout_s=5) as client:
            assert client.infer(_obs())["actions"].shape == (ACTION_HORIZON, 14)


def test_client_connect_timeout_names_the_server():
    with pytest.raises(TimeoutError, match="No policy server answered"):
        wcp.WebsocketClientPolicy(port=1, connect_timeout_s=0.5, retry_interval_s=0.1)


def _load_example(name: str):
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_examples_run_against_the_server(server):
    simple = _load_example("simple_client")
    summary = simple.main(simple.Args(port=server.port, num_requests=3, camera_height=48, camera_width=64))
    assert summary["round_trip_ms_p50"] >= summary["server_infer_ms_p50"] > 0

    yam = _load_example("yam_client")
    robot = yam.SimulatedYam(height=48, width=64)
    result = yam.run(yam.Args(port=server.port, steps=25, control_hz=1000.0), robot)
    assert result["replan_steps"] == ACTION_HORIZON and result["chunks"] == 3
    assert np.abs(robot.state).sum() > 0


def test_internal_error_is_logged_not_sent(train_config, tmp_path, caplog):
    """A policy whose weights do not fit its model fails inside jax/flax: that is the server's problem."""
    data = policy_config.inference_data_config(train_config, tmp_path)
    broken = _policy.Policy(
        train_config.model.model(),
        {"PaliGemma": {}},
        transforms=[*data.data_transforms.inputs, *data.model_transforms.inputs],
        output_transforms=list(data.data_transforms.outputs),
    )
    with (
        wps.WebsocketPolicyServer(broken, port=0).start_in_thread() as srv,
        wcp.WebsocketClientPolicy(port=srv.port, connect_timeout_s=10) as client,
    ):
        for attempt in range(2):  # the connection survives the failure
            with pytest.raises(wcp.ServerError) as info:
                client.infer(_obs(attempt))
            text = str(info.value)
            assert wps.INTERNAL_ERROR_PREFIX in text and "request id" in text
            assert "Traceback" not in text and "PaliGemma" not in text
    logged = [r for r in caplog.records if r.name == wps.__name__ and r.exc_info is not None]
    assert len(logged) == 2 and "Internal error while serving request" in logged[0].getMessage()
