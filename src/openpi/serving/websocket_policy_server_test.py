"""Bad requests against a real served policy (dummy-size pi0.6): one "Bad request: ..." sentence, connection kept."""

import dataclasses

import numpy as np
import pytest
import websockets.sync.client

from openpi.policies import policy_config
from openpi.policies import yam_policy
from openpi.serving import websocket_policy_server as _server
from openpi.shared import normalize
from openpi.training import config as _config
from openpi_client import msgpack_numpy


@pytest.fixture(scope="module")
def url(tiny_spm_model):
    config = dataclasses.replace(_config.get_config("debug_pi06"), tokenizer_path=str(tiny_spm_model))
    policy = policy_config.create_dummy_policy(config)
    server = _server.WebsocketPolicyServer(policy, port=0, metadata={"robot": "yam"})
    with server.start_in_thread() as background:
        yield f"ws://127.0.0.1:{background.port}"


def _replies(url: str, messages: list[bytes]) -> list[str]:
    with websockets.sync.client.connect(url, compression=None, max_size=None) as ws:
        ws.recv()  # metadata
        out = []
        for message in messages:
            ws.send(message)
            out.append(ws.recv())  # a second request on the same connection proves it stayed open
        return out


def _obs(**overrides):
    obs = yam_policy.make_yam_example(np.random.default_rng(0))
    obs.update(overrides)
    return obs


def test_bad_requests_get_one_clear_sentence(url):
    """Issue 14.9: each of these used to be an internal error or a misleading reply."""
    zero_image = _obs()
    zero_image["images"]["cam_high"] = np.zeros((0, 0, 3), np.uint8)
    replies = _replies(
        url,
        [
            msgpack_numpy.packb(zero_image),
            msgpack_numpy.packb({}),
            msgpack_numpy.packb(_obs(state=np.float32(0.5))),
            b"\xc1",
        ],
    )
    assert all(isinstance(r, str) and r.startswith(_server.BAD_REQUEST_PREFIX) for r in replies), replies
    zero, empty, scalar, garbage = replies
    assert "'images/cam_high'" in zero and "(0, 0, 3)" in zero
    assert "adv_ind" not in empty and "empty" in empty
    assert "scalar" in scalar and "float32 vector" not in scalar
    assert not garbage.rstrip(".").endswith("()") and "msgpack_numpy.packb" in garbage


def test_null_and_empty_indicators_are_bad_requests_and_the_connection_keeps_serving(url):
    """Issue 20.1: "adv_ind": None or "" used to be served unconditionally; a missing key still means positive."""
    replies = _replies(
        url,
        [msgpack_numpy.packb(_obs(adv_ind=None)), msgpack_numpy.packb(_obs(adv_ind="")), msgpack_numpy.packb(_obs())],
    )
    null, empty, good = replies
    for reply, shown in ((null, "None"), (empty, "''")):
        assert isinstance(reply, str) and reply.startswith(_server.BAD_REQUEST_PREFIX), reply
        assert f"must be one of 'positive', 'negative' or 'none', got {shown}" in reply
    assert msgpack_numpy.unpackb(good)["actions"].shape[-1] == 14


def test_float_images_outside_0_1_are_bad_requests(url):
    """Issue 20.2: float frames in 0..255, NaN or huge values used to be clipped and answered with actions."""
    frames = {
        "0..255": np.random.default_rng(1).uniform(0, 255, (224, 224, 3)).astype(np.float32),
        "nan": np.full((224, 224, 3), np.nan, np.float32),
        "huge": np.full((224, 224, 3), 1e300, np.float64),
    }
    messages = []
    for frame in frames.values():
        obs = _obs()
        obs["images"]["cam_left_wrist"] = frame
        messages.append(msgpack_numpy.packb(obs))
    *bad, good = _replies(url, [*messages, msgpack_numpy.packb(_obs())])
    for reply in bad:
        assert isinstance(reply, str) and reply.startswith(_server.BAD_REQUEST_PREFIX), reply
        assert "Camera 'cam_left_wrist'" in reply and "must lie in [0, 1]" in reply, reply
    assert "float32 image with values in [0" in bad[0] and "NaN/inf" in bad[1] and "[1e+300, 1e+300]" in bad[2]
    assert msgpack_numpy.unpackb(good)["actions"].shape[-1] == 14


def _nested(depth: int, leaf, *, lists: bool = False) -> object:
    for level in range(depth):
        leaf = [leaf] if lists and level % 2 else {"a": leaf}
    return leaf


def test_deeply_nested_requests_are_bad_requests_and_the_connection_keeps_serving(url):
    """Issue 29.9: a request nested 500 levels deep used to hit Python's recursion limit ("Internal server error");
    one nested past msgpack's own stack (1024 levels) was "not valid msgpack (StackError)"."""
    deep_image = _obs()
    deep_image["images"]["cam_high"] = _nested(500, np.zeros((4, 4, 3), np.uint8))
    messages = [
        msgpack_numpy.packb(_obs(state=_nested(500, 1.0))),
        msgpack_numpy.packb(deep_image),
        msgpack_numpy.packb(_obs(extra=_nested(500, 1.0, lists=True))),
        b"\x81\xa1a" * 2000 + b"\x80",  # 2000 nested maps, built by hand: msgpack refuses to pack them
    ]
    *bad, good = _replies(url, [*messages, msgpack_numpy.packb(_obs())])
    for reply in bad:
        assert isinstance(reply, str) and reply.startswith(_server.BAD_REQUEST_PREFIX), reply
        assert f"nests more than {_server.MAX_REQUEST_DEPTH} levels of maps and lists" in reply, reply
    assert msgpack_numpy.unpackb(good)["actions"].shape[-1] == 14


def _narrow(stats, key):
    return {**stats, key: normalize.NormStats(**{k: v[:7] for k, v in stats[key].to_dict().items()})}


@pytest.mark.parametrize("key", ["state", "actions"])
def test_norm_stats_that_do_not_fit_the_server_are_a_server_error(tiny_spm_model, key):
    """Issue 29.10: a server whose own norm stats do not fit (started with --no-warmup) answered every request
    "Bad request", blaming the client for a fault of the server."""
    config = dataclasses.replace(_config.get_config("debug_pi06"), tokenizer_path=str(tiny_spm_model))
    rng = np.random.default_rng(0)
    stats = {k: normalize.compute(rng.normal(size=(64, 14)).astype(np.float32)) for k in ("state", "actions")}
    policy = policy_config.create_dummy_policy(config, norm_stats=_narrow(stats, key), sample_kwargs={"num_steps": 1})
    server = _server.WebsocketPolicyServer(policy, port=0)
    with server.start_in_thread() as background:
        replies = _replies(f"ws://127.0.0.1:{background.port}", [msgpack_numpy.packb(_obs())] * 2)
    for reply in replies:  # two replies on one connection: it stayed open
        assert isinstance(reply, str) and reply.startswith(_server.SERVER_ERROR_PREFIX), reply
        assert f"'{key}'" in reply and "7 dims" in reply and "compute_norm_stats" in reply, reply
        assert _server.BAD_REQUEST_PREFIX not in reply
