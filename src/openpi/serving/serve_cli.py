"""`scripts/serve_policy.py`: serve a policy to robots over websocket (openpi's protocol; openpi clients work
unchanged).

    # A trained checkpoint (a step directory holding params/ and assets/):
    uv run scripts/serve_policy.py policy:checkpoint --policy.config=pi06_yam_vial_30fps_infer \\
        --policy.dir=checkpoints/pi06_yam_vial_30fps/my_run/29999 --port 8000

    # Freshly initialised dummy-size weights (random actions), to smoke-test a robot client or the network:
    uv run scripts/serve_policy.py policy:dummy --policy.config=debug_pi06

The server binds 127.0.0.1 unless `--host 0.0.0.0` is given; with `--api-key` (or $OPENPI_API_KEY) clients
must send `Authorization: Api-Key <key>`. `GET /healthz` answers 200 once the policy is loaded and warmed
up. pi0.6 checkpoints condition on "positive" unless a request's `adv_ind` says otherwise; `--cfg-beta`
turns on classifier-free guidance. Serving a training config (with indicator dropout) is safe: dropout is
always off at inference. A pi0 / pi0.5 checkpoint ignores `adv_ind` and says so: `conditions_on_adv_ind: false`
in its metadata, `adv_ind_ignored: true` in the reply to a request that sent one. Norm stats that do not fit the
served config (which `--no-warmup` would otherwise only reveal at the first request) are answered "Server error:
...", never "Bad request".
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import errno
import logging
import os
import pathlib
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Annotated

import tyro

from openpi.models import tokenizer as _tokenizer
from openpi.policies import policy as _policy
from openpi.policies import policy_config
from openpi.serving import websocket_policy_server
from openpi.shared import cli as _cli
from openpi.shared import errors
from openpi.training import config as _config

logger = logging.getLogger("openpi.serve_policy")

API_KEY_ENV = "OPENPI_API_KEY"
# Lets `--port` etc. follow the subcommand, as in openpi's usage (tyro >= 1.0 name; the old alias does not work there).
_CASCADE = getattr(tyro.conf, "CascadeSubcommandArgs", None) or tyro.conf.ConsolidateSubcommandArgs


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Serve the weights of one checkpoint step."""

    config: str
    """Training config name, e.g. pi06_yam_vial_30fps_infer."""
    dir: str
    """Checkpoint step directory, e.g. checkpoints/<config>/<exp>/<step> (holds params/ and assets/)."""


@dataclasses.dataclass(frozen=True)
class Dummy:
    """Serve freshly initialised weights of a (dummy-size) config: random actions, for smoke tests."""

    config: str = "debug_pi06"
    """Training config name; pick a dummy-size one (debug_pi06, demo_pi06) on a CPU."""


@dataclasses.dataclass(frozen=True)
class Args:
    policy: Annotated[Checkpoint, tyro.conf.subcommand("checkpoint")] | Annotated[Dummy, tyro.conf.subcommand("dummy")]
    """What to serve."""
    host: str = "127.0.0.1"
    """Interface to bind; 0.0.0.0 serves every network the machine is on."""
    port: int = 8000
    """TCP port (0 picks a free one; the log says which)."""
    api_key: str | None = None
    """Require `Authorization: Api-Key <key>` from clients; default $OPENPI_API_KEY if set."""
    cfg_beta: float | None = None
    """Classifier-free guidance strength for pi0.6 (paper: 1.5 to 2.5); unset or 1 = plain conditioning."""
    num_steps: int = 10
    """Flow-matching integration steps per request."""
    default_prompt: str | None = None
    """Prompt used when a request has none (before the config's own default prompt)."""
    tokenizer_path: str | None = None
    """PaliGemma SentencePiece model; default the config's, else the openpi cache."""
    max_request_bytes: int = websocket_policy_server.DEFAULT_MAX_REQUEST_BYTES
    """Larger requests get an error reply (frames over twice this close the connection)."""
    warmup: bool = True
    """Run one example request before listening, so the first robot request does not pay for compilation."""
    seed: int = 0
    """Seed of the sampling noise (and of the dummy weights)."""
    noise_per_observation: bool = False
    """Draw each request's noise from the seed and the observation, not from the order of requests, so that an
    evaluation with several clients repeats exactly (what scripts/eval_policy.py asks of the server it starts)."""


def _dummy_tokenizer_path(args: Args, train_config: _config.TrainConfig) -> str | None:
    """For smoke tests only: without the real tokenizer on this machine, train a throwaway one."""
    if args.tokenizer_path or train_config.tokenizer_path or _tokenizer.PaligemmaTokenizer.default_path().is_file():
        return args.tokenizer_path
    from openpi.shared import testing

    path = pathlib.Path(tempfile.mkdtemp(prefix="openpi_dummy_tokenizer_")) / "paligemma_tokenizer.model"
    logger.warning(
        "No PaliGemma tokenizer at %s; the dummy policy uses a tiny throwaway one (%s).",
        _tokenizer.PaligemmaTokenizer.default_path(),
        path,
    )
    return str(testing.train_tiny_sentencepiece(path))


def create_policy(args: Args) -> _policy.Policy:
    sample_kwargs = {"num_steps": args.num_steps}
    train_config = _config.get_config(args.policy.config)
    if isinstance(args.policy, Checkpoint):
        return policy_config.create_trained_policy(
            train_config,
            args.policy.dir,
            sample_kwargs=sample_kwargs,
            default_prompt=args.default_prompt,
            tokenizer_path=args.tokenizer_path,
            cfg_beta=args.cfg_beta,
            seed=args.seed,
            noise_per_observation=args.noise_per_observation,
        )
    return policy_config.create_dummy_policy(
        train_config,
        tokenizer_path=_dummy_tokenizer_path(args, train_config),
        sample_kwargs=sample_kwargs,
        default_prompt=args.default_prompt,
        cfg_beta=args.cfg_beta,
        seed=args.seed,
        noise_per_observation=args.noise_per_observation,
    )


def _warmup(policy: _policy.Policy, train_config: _config.TrainConfig) -> None:
    example = train_config.data.warmup_example()
    if example is None:
        logger.info("No example observation for %s; the first request will compile the model.", train_config.name)
        return
    start = time.monotonic()
    policy.infer(example)
    logger.info("Warm-up request done in %.1f s (includes compilation).", time.monotonic() - start)


def cli(argv: Sequence[str] | None = None, *, check_config: bool = True) -> Args:
    """Parses `policy:checkpoint|policy:dummy [--options]` (options may follow the subcommand, as in openpi); an
    unknown training config name suggests the nearest ones (`check_config=False` skips that, for placeholders)."""
    args = _cli.parse(Args, sys.argv[1:] if argv is None else argv, prog="serve_policy.py", config=(_CASCADE,))
    if check_config:
        _config.get_config(args.policy.config)  # a typo fails here, with the nearest names
    return args


def _check_port_free(host: str, port: int) -> None:
    """Fails in a second, not after a minute of loading weights, when another process holds the port."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise errors.ConfigError(
            f"Cannot resolve --host {host!r} ({exc}); pass an address such as 127.0.0.1."
        ) from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself binds
        probe.bind(address)


def _stop_on_sigterm() -> None:
    """`docker stop`, systemd and Ctrl-C alike: close connections and exit 0 instead of dying mid-reply."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def serve(args: Args) -> None:
    """Loads, warms up (on the data config's `warmup_example`) and serves until SIGTERM or Ctrl-C; a busy port fails
    before any weights are loaded."""
    try:
        _check_port_free(args.host, args.port)
        api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
        if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
            logger.warning("Serving on %s without an API key: anyone who can reach this port can query it.", args.host)
        policy = create_policy(args)
        if args.warmup:
            _warmup(policy, _config.get_config(args.policy.config))
        server = websocket_policy_server.WebsocketPolicyServer(
            policy,
            host=args.host,
            port=args.port,
            metadata=policy.metadata,
            api_key=api_key,
            max_request_bytes=args.max_request_bytes,
        )
        server.serve_forever()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise errors.ConfigError(
            f"Port {args.port} on {args.host} is already in use; stop the other server or pass --port."
        ) from None
    except KeyboardInterrupt:
        logger.info("Stopped.")


def main(argv: Sequence[str] | None = None) -> None:
    """The script: `serve_policy.py policy:checkpoint|policy:dummy [--options]`; user errors exit 2 in one line."""

    def run(args: list[str]) -> None:
        _stop_on_sigterm()
        serve(cli(args))

    _cli.run(run, argv, name="openpi.serve_policy")


if __name__ == "__main__":
    main()
