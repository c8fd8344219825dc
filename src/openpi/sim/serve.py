"""`scripts/serve_policy.py`'s server (`openpi.serving.serve_cli`) with the simulated envs' warm-up example.

A sim config's first request compiles the model unless the server warms up on an observation its clients would
send, and only an env makes one. The server sits below the simulator in the layers (CONTRIBUTING.md), so it cannot
look an env up itself: this entry point hands it `warmup_example`. `eval_cli` starts it as a module, the script
runs its `main`.
"""

from collections.abc import Sequence
from typing import Any

from openpi.serving import serve_cli
from openpi.sim import base
from openpi.sim import registry


def warmup_example(data: Any) -> dict | None:
    """The first observation of the first registered sim env whose cameras and action size fit the sim data config.

    The config does not name its env, so the one that produces what its clients will send is looked up; an env
    whose optional extra is missing is skipped (the first request then pays for compilation).
    """
    for env_name in registry.env_names():
        try:
            env = registry.make_env(env_name, registry.task_names(env_name)[0])
        except base.SimError:
            continue
        if env.action_dim == data.action_dim and set(data.cameras) <= set(env.cameras):
            return env.reset(0)
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """`serve_policy.py policy:checkpoint|policy:dummy [--options]`, warming sim configs up on an env observation."""
    serve_cli.main(argv, sim_example=warmup_example)


if __name__ == "__main__":
    main()
