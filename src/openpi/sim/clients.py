"""What the collection and evaluation commands (`openpi.sim.collect_cli`, `openpi.sim.eval_cli`) share: the task
list, the connection to the policy server, the operator built from flags, and one-sentence server errors."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Literal
from typing import TypeVar

from openpi.shared import errors
from openpi.sim import operator as _operator
from openpi.sim import registry
from openpi_client import websocket_client_policy as wcp

R = TypeVar("R")
AdvInd = Literal["positive", "negative", "none"]


class CollectError(errors.UserError, ValueError):
    """A collection or evaluation run was asked for something inconsistent (flags, output place, server)."""


def resolve_tasks(env_name: str, tasks: Sequence[str]) -> list[str]:
    """The requested tasks (checked against the env), or all of them; an unknown one is a one-sentence error."""
    known = registry.task_names(env_name)
    if not tasks:
        return known
    for task in tasks:
        if task not in known:
            registry.make_env(env_name, task)  # raises SimError with a 'did you mean'
    if len(set(tasks)) != len(tasks):
        raise CollectError(f"--tasks lists a task twice ({', '.join(tasks)}); name each task once.")
    return list(tasks)


def connect(host: str, port: int, api_key: str | None, timeout_s: float) -> wcp.WebsocketClientPolicy:
    """A websocket client of the policy server; no server in time is a one-sentence error."""
    try:
        return wcp.WebsocketClientPolicy(host, port, api_key, connect_timeout_s=timeout_s, retry_interval_s=0.5)
    except (TimeoutError, ConnectionError, wcp.ServerError) as exc:
        raise CollectError(f"Cannot reach the policy server at {host}:{port}: {exc}") from None


def make_operator(args) -> _operator.Operator:
    return _operator.Operator(
        stall_steps=args.stall_steps, min_progress=args.min_progress, handback_steps=args.handback_steps
    )


def server_error_message(exc: BaseException) -> str | None:
    """One sentence for failures of the policy server path, or None for anything that is a bug here."""
    if isinstance(exc, wcp.ServerError):
        return f"{exc} (check that the served config matches --env)"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return f"Lost the policy server: {exc}"
    return None


def check_counts(**counts: int) -> None:
    """Each `flag_name=value` must be at least 1 (`episodes_per_task=0` -> "--episodes-per-task must be ...")."""
    for name, value in counts.items():
        if value < 1:
            raise CollectError(f"--{name.replace('_', '-')} must be at least 1, got {value}.")


def reporting_server_errors(fn: Callable[[list[str]], R]) -> Callable[[list[str]], R]:
    """`fn`, with a lost or failing policy server turned into a one-sentence CollectError (exit 2 under
    `openpi.shared.cli.run`) instead of a traceback from inside a client thread."""

    def wrapped(args: list[str]) -> R:
        try:
            return fn(args)
        except (wcp.ServerError, ConnectionError, TimeoutError) as exc:
            message = server_error_message(exc)
            if message is None:
                raise
            raise CollectError(message) from None

    return wrapped
