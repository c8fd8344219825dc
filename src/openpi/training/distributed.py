"""Joining the other processes of a multi-host run (JAX's own distributed runtime).

Shared by every trainer (`scripts/train.py`, `scripts/train_value.py`): the same flags, the same environment
variables, and the same cluster auto-detection (SLURM, TPU pods), so a launch script works for both.
"""

from collections.abc import Sequence
import os

import jax

from openpi.shared import errors

DIST_FLAGS = {"--coordinator-address": "JAX_COORDINATOR_ADDRESS", "--num-processes": "JAX_NUM_PROCESSES",
               "--process-id": "JAX_PROCESS_ID"}  # fmt: skip


def pop_distributed_flags(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Splits `--coordinator-address/--num-processes/--process-id` (before the config name) from the rest."""
    rest, found = [], {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        key, _, value = arg.partition("=")
        if key in DIST_FLAGS:
            if not value:
                i += 1
                value = args[i] if i < len(args) else ""
            found[DIST_FLAGS[key]] = value
        else:
            rest.append(arg)
        i += 1
    return rest, found


def maybe_initialize_distributed(overrides: dict[str, str] | None = None) -> bool:
    """Joins the other processes when launched multi-process; returns True if it did. Call before using JAX."""
    env = {**os.environ, **(overrides or {})}
    num = env.get("JAX_NUM_PROCESSES")
    if num is not None and int(num) > 1:
        if not env.get("JAX_COORDINATOR_ADDRESS") or env.get("JAX_PROCESS_ID") is None:
            raise errors.ConfigError(
                "JAX_NUM_PROCESSES > 1 also needs JAX_COORDINATOR_ADDRESS (host:port of process 0) and "
                "JAX_PROCESS_ID (0..N-1) for every process."
            )
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(num),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
        return True
    if int(env.get("SLURM_NTASKS", "1")) > 1 or env.get("OPENPI_DISTRIBUTED") == "1":
        jax.distributed.initialize()  # cluster auto-detection (SLURM, TPU pods, ...)
        return True
    return False


def barrier(name: str, *, timeout_s: float = 3600.0) -> None:
    """Waits until every process reached the barrier `name` (a no-op in a single-process run).

    A host-side barrier on the jax.distributed coordination service: training syncs around its checkpoint
    directory with it, relabelling waits with it (for hours: `timeout_s`) for the slowest process's episodes.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed as _jax_distributed

    client = _jax_distributed.global_state.client
    if client is None:  # several processes without jax.distributed's client (not expected): a device collective
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
        return
    client.wait_at_barrier(name, timeout_in_ms=int(timeout_s * 1000))
