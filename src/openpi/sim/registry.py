"""Name -> simulated environment: `make_env(env_name, task, **kwargs)` and `task_names(env_name)`.

Collection and evaluation scripts take an env name and a task on the command line; this is the one place
that maps them to a class. Entries are imported lazily so that an optional third-party benchmark
(MetaWorld, installed with the ``sim`` extra) costs nothing for users who do not have it, and a missing
extra is reported as one sentence rather than an ImportError.
"""

import dataclasses
import difflib
import importlib
from typing import Any

from openpi.sim import base


@dataclasses.dataclass(frozen=True)
class EnvEntry:
    """Where an env lives: `module.<factory>(task, **kwargs)` builds it, `module.<tasks>` lists its tasks."""

    module: str
    factory: str
    tasks: str
    # The pip/uv extra that provides the env's third-party dependencies (None: always available).
    extra: str | None = None


# To add an env, add one entry here (the module is imported only when the env is asked for).
ENVS: dict[str, EnvEntry] = {
    "tabletop": EnvEntry("openpi.sim.tabletop", "TabletopEnv", "TASKS"),
    "metaworld": EnvEntry("openpi.sim.metaworld_env", "MetaWorldEnv", "TASKS", extra="sim"),
}


def env_names() -> list[str]:
    """All registered env names (an optional env is listed even when its extra is not installed)."""
    return list(ENVS)


def _module(env_name: str) -> tuple[EnvEntry, Any]:
    if env_name not in ENVS:
        close = difflib.get_close_matches(env_name, ENVS, n=1, cutoff=0.0)
        raise base.SimError(
            f"No simulated env named {env_name!r}; did you mean {close[0]!r}? (envs: {', '.join(ENVS)})"
        )
    entry = ENVS[env_name]
    try:
        module = importlib.import_module(entry.module)
    except ImportError as e:
        if entry.extra is None:
            raise
        raise base.SimError(
            f"The {env_name!r} env needs the optional '{entry.extra}' extra ({e.name or e} is not installed); "
            f"install it with `uv sync --extra {entry.extra}`."
        ) from e
    return entry, module


def task_names(env_name: str) -> list[str]:
    """The tasks of `env_name`; an unknown env or a missing optional extra raises SimError."""
    entry, module = _module(env_name)
    return list(getattr(module, entry.tasks))


def make_env(env_name: str, task: str, **kwargs: Any) -> base.SimEnv:
    """A new env of `env_name` for `task`; `kwargs` go to its constructor (e.g. ``cameras=("top", "wrist")``)."""
    entry, module = _module(env_name)
    tasks = list(getattr(module, entry.tasks))
    if task not in tasks:
        close = difflib.get_close_matches(task, tasks, n=1, cutoff=0.0)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise base.SimError(f"The {env_name!r} env has no task {task!r}; {hint}(tasks: {', '.join(tasks)})")
    return getattr(module, entry.factory)(task, **kwargs)
