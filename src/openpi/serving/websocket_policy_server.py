"""Websocket server that exposes a policy to robots, speaking openpi's client protocol.

Wire protocol (unchanged from openpi, so its robot clients work as they are):
  - binary frames, no compression; every message is one msgpack dict with numpy extension maps
    (`openpi_client.msgpack_numpy`);
  - on connect the server first sends the policy's metadata dict;
  - then, per request, the client sends an observation dict and the server answers with the policy's
    output dict (``actions`` [H, D], ``policy_timing``) plus ``server_timing``:
    ``infer_ms`` (time inside `policy.infer`), ``queue_ms`` (time waiting for the inference thread behind
    other connections) and, from the second request on, ``prev_total_ms`` (previous request: from
    receiving it to having sent its reply);
  - ``GET /healthz`` answers 200 without a websocket handshake.

Where we differ from openpi's server, on purpose:
  - a bad request gets one TEXT frame ``"Bad request: <what is wrong and what to do>"`` and the connection
    stays open for the next request (openpi sends a traceback and closes with 1011, which makes a robot
    reconnect and tells it nothing useful). openpi's client raises on any text frame, so it stays
    compatible. A fault of the server's own setup (`errors.ServerSetupError`: e.g. norm stats that do not fit its
    model, which only a request reveals when it starts with ``--no-warmup``) gets ``"Server error: <what is wrong
    and what the operator must do>"`` instead, so the client is not blamed, and the connection stays open too.
    Unexpected failures are logged here with their traceback; the client gets
    ``"Internal server error: ..."`` with a request id to find the log line, never the traceback;
  - inference runs on a worker thread, so the event loop keeps answering ``/healthz``, pings and other
    connections while the accelerator works (requests from several robots queue for that thread);
  - binds 127.0.0.1 unless told otherwise, optional API key (``Authorization: Api-Key <key>``; a missing
    or wrong key is refused with HTTP 401 during the handshake; ``/healthz`` needs no key);
  - bounded requests: a message over `max_request_bytes`, or one nesting maps and lists more than
    `MAX_REQUEST_DEPTH` levels deep (the policy's transforms walk observations recursively), gets a bad-request
    reply (the connection stays open); a frame over `max_frame_bytes` is not even read: the websocket layer closes that connection
    with code 1009 (message too big), protecting memory. Other connections are unaffected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import concurrent.futures
import dataclasses
import hmac
import http
import itertools
import logging
import threading
import time
from typing import Any

import msgpack
import websockets.asyncio.server as _server
import websockets.exceptions

from openpi.shared import errors
from openpi_client import base_policy as _base_policy
from openpi_client import msgpack_numpy

logger = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 64 * 2**20
BAD_REQUEST_PREFIX = "Bad request: "
SERVER_ERROR_PREFIX = "Server error: "
INTERNAL_ERROR_PREFIX = "Internal server error: "
# An observation is a dict of images (a dict of arrays), state and prompt: three levels. The limit leaves room for
# clients that group keys further, and stays far below Python's recursion limit, which the transforms would hit.
MAX_REQUEST_DEPTH = 32


class BadRequestError(errors.UserError, ValueError):
    """A client sent a message the server cannot turn into an observation."""


@dataclasses.dataclass(frozen=True)
class ServerTiming:
    infer_ms: float
    queue_ms: float


class WebsocketPolicyServer:
    """Serves `policy.infer` to any number of openpi websocket clients.

    Args:
        policy: Anything with ``infer(obs: dict) -> dict``.
        host: Interface to bind; 127.0.0.1 keeps the policy private to this machine. Use 0.0.0.0 to serve
            robots on the network (then consider `api_key`).
        port: TCP port; 0 picks a free one (see `BackgroundServer.port`).
        metadata: Sent to every client right after the handshake.
        api_key: When set, clients must send ``Authorization: Api-Key <api_key>``.
        max_request_bytes: Larger requests get a bad-request reply.
        max_frame_bytes: Larger frames close the connection (1009) before being read;
            default 2 x `max_request_bytes`.
        inference_threads: Threads running `policy.infer`; 1 serialises requests (one accelerator).
    """

    def __init__(
        self,
        policy: _base_policy.BasePolicy,
        host: str = "127.0.0.1",
        port: int = 8000,
        metadata: dict | None = None,
        *,
        api_key: str | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_frame_bytes: int | None = None,
        inference_threads: int = 1,
    ) -> None:
        if max_request_bytes <= 0:
            raise errors.ConfigError(f"max_request_bytes must be positive, got {max_request_bytes}.")
        self._policy = policy
        self._host = host
        self._port = port
        self._metadata = dict(metadata or {})
        self._api_key = api_key or None
        self._max_request_bytes = max_request_bytes
        self._max_frame_bytes = max_frame_bytes if max_frame_bytes is not None else 2 * max_request_bytes
        if self._max_frame_bytes < max_request_bytes:
            raise errors.ConfigError(
                f"max_frame_bytes ({self._max_frame_bytes}) must be at least max_request_bytes ({max_request_bytes})."
            )
        self._inference_threads = inference_threads
        self._request_ids = itertools.count(1)
        # Fail at start-up, not on the first client, if the metadata cannot travel.
        self._packed_metadata = msgpack_numpy.packb(self._metadata)

    async def run(self, on_ready: Callable[[int], None] | None = None, stop: asyncio.Future | None = None) -> None:
        """Serves until `stop` resolves (or forever); calls `on_ready(port)` once listening."""
        executor = concurrent.futures.ThreadPoolExecutor(self._inference_threads, thread_name_prefix="policy-infer")
        try:
            async with _server.serve(
                lambda ws: self._handle(ws, executor),
                self._host,
                self._port,
                compression=None,
                max_size=self._max_frame_bytes,
                process_request=self._process_request,
            ) as server:
                port = next(iter(server.sockets)).getsockname()[1]
                logger.info("Policy server listening on ws://%s:%d (health check: GET /healthz)", self._host, port)
                if on_ready is not None:
                    on_ready(port)
                if stop is None:
                    await server.serve_forever()
                else:
                    await stop
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    def serve_forever(self) -> None:
        """Blocks serving requests (what `scripts/serve_policy.py` calls)."""
        asyncio.run(self.run())

    def start_in_thread(self, timeout_s: float = 30.0) -> BackgroundServer:
        """Starts serving on a daemon thread and returns once the socket listens (tests, benchmarks)."""
        return BackgroundServer(self, timeout_s)

    def _process_request(self, connection: _server.ServerConnection, request: _server.Request) -> Any:
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self._api_key is not None:
            given = request.headers.get("Authorization", "")
            expected = f"Api-Key {self._api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                logger.warning("Refused connection from %s: missing or wrong API key", connection.remote_address)
                return connection.respond(
                    http.HTTPStatus.UNAUTHORIZED,
                    "Missing or wrong API key: send the header 'Authorization: Api-Key <key>' with the server's key.\n",
                )
        return None

    async def _handle(self, ws: _server.ServerConnection, executor: concurrent.futures.Executor) -> None:
        peer = ws.remote_address
        logger.info("Connection from %s opened", peer)
        prev_total_ms: float | None = None
        try:
            await ws.send(self._packed_metadata)
            while True:
                message = await ws.recv()
                received = time.monotonic()
                reply = await self._answer(message, executor, prev_total_ms, peer)
                await ws.send(reply)
                prev_total_ms = (time.monotonic() - received) * 1000
        except websockets.exceptions.ConnectionClosed as exc:
            if exc.rcvd is None and exc.sent is not None and exc.sent.code == 1009:
                logger.warning("Closed connection from %s: frame over %d bytes", peer, self._max_frame_bytes)
            logger.info("Connection from %s closed", peer)

    async def _answer(
        self, message: str | bytes, executor: concurrent.futures.Executor, prev_total_ms: float | None, peer: Any
    ) -> str | bytes:
        """Turns one request into the bytes of its reply, or the text of an error reply."""
        try:
            obs = self._decode(message)
            loop = asyncio.get_running_loop()
            submitted = time.monotonic()
            outputs, timing = await loop.run_in_executor(executor, self._timed_infer, obs, submitted)
            if not isinstance(outputs, dict):
                raise TypeError(f"policy.infer returned {type(outputs).__name__}, expected a dict")
            server_timing: dict[str, float] = {"infer_ms": timing.infer_ms, "queue_ms": timing.queue_ms}
            if prev_total_ms is not None:
                server_timing["prev_total_ms"] = prev_total_ms
            return msgpack_numpy.packb({**outputs, "server_timing": server_timing})
        except errors.ServerSetupError as exc:
            logger.error("Could not serve a request from %s, a fault of this server: %s", peer, exc)
            return SERVER_ERROR_PREFIX + _one_line(str(exc))
        except errors.UserError as exc:
            logger.info("Bad request from %s: %s", peer, exc)
            return BAD_REQUEST_PREFIX + _one_line(str(exc))
        except Exception:
            request_id = next(self._request_ids)
            logger.exception("Internal error while serving request %d from %s", request_id, peer)
            return (
                f"{INTERNAL_ERROR_PREFIX}the policy failed on this request (request id {request_id}); "
                "the details are in the server log."
            )

    def _decode(self, message: str | bytes) -> dict:
        if isinstance(message, str):
            raise BadRequestError(
                "the request came as a text frame; send the observation as one binary frame of msgpack "
                "(openpi_client.msgpack_numpy.packb)."
            )
        if len(message) > self._max_request_bytes:
            raise BadRequestError(
                f"the request is {len(message)} bytes, over this server's limit of {self._max_request_bytes} "
                "bytes; resize images on the client (openpi_client.image_tools.resize_with_pad) or raise "
                "--max-request-bytes."
            )
        try:
            obs = msgpack_numpy.unpackb(message)
        except msgpack_numpy.DecodeError as exc:
            cause = exc.__cause__
            if isinstance(cause, msgpack.exceptions.StackError):  # msgpack's own limit (1024 levels)
                raise _too_deep() from None
            detail = str(exc).strip()
            if not detail or detail.endswith("()."):  # msgpack's FormatError and friends carry no text
                detail = f"not valid msgpack ({type(cause).__name__ if cause else 'undecodable bytes'})"
            raise BadRequestError(
                f"the request could not be decoded ({detail.rstrip('.')}); pack the observation dict with "
                "openpi_client.msgpack_numpy.packb and send it as one binary frame."
            ) from None
        if not isinstance(obs, dict):
            raise BadRequestError(
                f"the request decodes to a {type(obs).__name__}; send one observation dict per frame."
            )
        _check_depth(obs)
        return obs

    def _timed_infer(self, obs: dict, submitted: float) -> tuple[Any, ServerTiming]:
        start = time.monotonic()
        outputs = self._policy.infer(obs)
        end = time.monotonic()
        return outputs, ServerTiming(infer_ms=(end - start) * 1000, queue_ms=(start - submitted) * 1000)


def _too_deep() -> BadRequestError:
    return BadRequestError(
        f"the request nests more than {MAX_REQUEST_DEPTH} levels of maps and lists; send one observation dict of "
        "images (a dict of arrays), state and prompt."
    )


def _check_depth(obs: dict) -> None:
    """Refuses a request nested past `MAX_REQUEST_DEPTH`, walking it without recursion: the policy's transforms
    recurse into nested dicts, so a deep one would otherwise fail as a RecursionError (an internal error)."""
    level = [obs]
    for _ in range(MAX_REQUEST_DEPTH):
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list, tuple))
        ]
        if not level:
            return
    raise _too_deep()


def _one_line(text: str) -> str:
    return " ".join(text.split())


class BackgroundServer:
    """A `WebsocketPolicyServer` running on its own thread and event loop; use as a context manager."""

    def __init__(self, server: WebsocketPolicyServer, timeout_s: float) -> None:
        self._server = server
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future | None = None
        self._error: BaseException | None = None
        self.port: int = -1
        self._thread = threading.Thread(target=self._main, name="policy-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"Policy server did not start listening within {timeout_s} s.")
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = self._loop.create_future()
            await self._server.run(on_ready=self._on_ready, stop=self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def _on_ready(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stops listening, closes connections and waits for the thread."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(lambda: self._stop.done() or self._stop.set_result(None))
        self._thread.join(timeout_s)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
