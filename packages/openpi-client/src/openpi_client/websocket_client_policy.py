"""A policy that runs on a remote openpi-compatible server, reached over a websocket.

Protocol (shared with openpi's servers): binary frames, no compression. Right after the handshake the
server sends one packed metadata dict. Each request is one packed observation dict; each reply is one
packed dict holding ``actions`` plus ``policy_timing`` / ``server_timing``. A text frame instead of a
reply is an error message: openpi's server then closes the connection, ours keeps it open, and this
client raises `ServerError` either way.
"""

from __future__ import annotations

import inspect
import logging
import time

import websockets.exceptions
import websockets.sync.client

from openpi_client import base_policy as _base_policy
from openpi_client import msgpack_numpy

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8000
_METADATA_TIMEOUT_S = 30.0

# Version-dependent arguments of websockets.sync.client.connect:
# - proxy=None: websockets >= 15 honours HTTP(S)_PROXY for ws:// URIs, but a robot talking to a server on its own
#   network must not be routed through a proxy (older versions have no proxy support and no such argument);
# - legacy=True: websockets >= 17.1 wants connect() used as a context manager unless told we hold the connection
#   ourselves, which this long-lived client does.
_CONNECT_PARAMS = inspect.signature(websockets.sync.client.connect).parameters
_CONNECT_KWARGS = {
    **({"proxy": None} if "proxy" in _CONNECT_PARAMS else {}),
    **({"legacy": True} if "legacy" in _CONNECT_PARAMS else {}),
}


class ServerError(RuntimeError):
    """The server answered a request with an error message instead of actions."""


class AuthenticationError(ConnectionError):
    """The server refused the handshake (HTTP 401/403): the API key is missing or wrong."""


class WebsocketClientPolicy(_base_policy.BasePolicy):
    """Implements `BasePolicy.infer` by asking a `serve_policy.py` server (ours or openpi's).

    Args:
        host: Server host name or address, or a full ``ws://host:port`` URI (then `port` is only appended
            when given explicitly).
        port: Server port; defaults to 8000 for plain host names, like the server.
        api_key: Sent as ``Authorization: Api-Key <key>`` when the server requires a key.
        connect_timeout_s: Give up waiting for the server after this long (None: wait forever, as a robot
            started before its server expects). Refused connections are retried every `retry_interval_s`.
        request_timeout_s: Limit for one `infer` round trip (None: no limit). After a timeout the connection
            is dropped (a late reply would be mistaken for the next one) and the next call reconnects.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        api_key: str | None = None,
        *,
        connect_timeout_s: float | None = None,
        request_timeout_s: float | None = None,
        retry_interval_s: float = 2.0,
    ) -> None:
        if host.startswith(("ws://", "wss://")):
            self._uri = host if port is None else f"{host}:{port}"
        else:
            self._uri = f"ws://{host}:{DEFAULT_PORT if port is None else port}"
        self._api_key = api_key
        self._connect_timeout_s = connect_timeout_s
        self._request_timeout_s = request_timeout_s
        self._retry_interval_s = retry_interval_s
        self._packer = msgpack_numpy.Packer()
        self._ws: websockets.sync.client.ClientConnection | None = None
        self._server_metadata: dict = {}
        self._connect()

    @property
    def uri(self) -> str:
        return self._uri

    def get_server_metadata(self) -> dict:
        """The metadata dict the server sent on connect (e.g. action horizon, robot type)."""
        return self._server_metadata

    def _connect(self) -> None:
        headers = {"Authorization": f"Api-Key {self._api_key}"} if self._api_key else None
        deadline = None if self._connect_timeout_s is None else time.monotonic() + self._connect_timeout_s
        logger.info("Waiting for policy server at %s ...", self._uri)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                ws = websockets.sync.client.connect(
                    self._uri,
                    compression=None,
                    max_size=None,
                    additional_headers=headers,
                    open_timeout=10 if remaining is None else max(remaining, 0.1),
                    **_CONNECT_KWARGS,
                )
            except websockets.exceptions.InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    raise AuthenticationError(
                        f"Policy server at {self._uri} refused the connection (HTTP {status}): "
                        + ("pass the server's key with api_key=." if not self._api_key else "the API key is wrong.")
                    ) from exc
                if status != 503:  # 503: server starting or overloaded; anything else will not heal by retrying.
                    raise ConnectionError(
                        f"Policy server at {self._uri} answered the handshake with {status}."
                    ) from exc
                last_error: Exception = exc
            except (OSError, TimeoutError, websockets.exceptions.InvalidHandshake) as exc:
                last_error = exc
            else:
                try:
                    # Servers send the metadata right after the handshake; one that does not is broken, not busy.
                    first = ws.recv(timeout=_METADATA_TIMEOUT_S if remaining is None else max(remaining, 1.0))
                except (TimeoutError, websockets.exceptions.ConnectionClosed) as exc:
                    ws.close()
                    raise ConnectionError(
                        f"Policy server at {self._uri} sent no metadata after the handshake."
                    ) from exc
                if isinstance(first, str):
                    ws.close()
                    raise ServerError(f"Policy server at {self._uri} sent an error instead of metadata: {first}")
                self._ws = ws
                self._server_metadata = msgpack_numpy.unpackb(first)
                logger.info("Connected to policy server at %s", self._uri)
                return
            if deadline is not None and time.monotonic() + self._retry_interval_s > deadline:
                raise TimeoutError(
                    f"No policy server answered at {self._uri} within {self._connect_timeout_s} s "
                    f"(last error: {last_error}); start serve_policy.py or check host and port."
                ) from last_error
            logger.info("Still waiting for policy server at %s (%s)", self._uri, last_error)
            time.sleep(self._retry_interval_s)

    def infer(self, obs: dict) -> dict:
        """Sends one observation and returns the server's reply (``actions`` [H, D] and timings).

        Raises `ServerError` with the server's message when it rejects the request; the connection stays
        usable for the next request. A connection the server closed in between is reopened; one that closes
        while waiting for the reply raises `ConnectionError` (the request may have been lost), and the next
        call reconnects.
        """
        data = self._packer.pack(obs)
        if self._ws is None:
            self._connect()
        assert self._ws is not None
        try:
            self._ws.send(data)
        except websockets.exceptions.ConnectionClosed:
            # The server closed the connection since the last reply (openpi's server does after an error, ours
            # when it restarts): nothing was delivered, so sending again on a new connection is safe.
            self._connect()
            self._ws.send(data)
        try:
            response = self._ws.recv(timeout=self._request_timeout_s)
        except TimeoutError:
            self.close()
            raise TimeoutError(
                f"Policy server at {self._uri} did not answer within {self._request_timeout_s} s; "
                "the connection was dropped and the next call reconnects."
            ) from None
        except websockets.exceptions.ConnectionClosed as exc:
            self._ws = None
            raise ConnectionError(f"Connection to policy server at {self._uri} closed: {exc}") from exc
        if isinstance(response, str):
            raise ServerError(f"Policy server rejected the request: {response}")
        return msgpack_numpy.unpackb(response)

    def reset(self) -> None:
        """Nothing to reset on the client; the server is stateless between requests."""

    def close(self) -> None:
        """Closes the connection; a later `infer` reconnects."""
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def __enter__(self) -> WebsocketClientPolicy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
