"""Device mesh and shardings for data-parallel + FSDP training, on one host or many.

The mesh has axes ("batch", "fsdp"): batches are split over both (every device sees different frames);
large parameters and their optimizer state are split over "fsdp" only, so `fsdp_devices` trades memory for
communication. Shared by the policy trainer and the value-model trainer.
"""

import logging
import math
from typing import Any

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np

from openpi.shared import errors

try:
    from jax.sharding import AxisType
except ImportError:  # older jax: every mesh axis is automatic
    AxisType = None

BATCH_AXIS = "batch"
FSDP_AXIS = "fsdp"
DATA_AXIS = (BATCH_AXIS, FSDP_AXIS)

logger = logging.getLogger(__name__)


def make_mesh(fsdp_devices: int = 1, devices: list | None = None) -> Mesh:
    """A (device_count / fsdp_devices, fsdp_devices) mesh over all devices of all processes."""
    devices = list(jax.devices()) if devices is None else list(devices)
    if fsdp_devices < 1 or len(devices) % fsdp_devices != 0:
        raise errors.ConfigError(
            f"fsdp_devices={fsdp_devices} must divide the number of devices ({len(devices)}); "
            "pick a divisor with --fsdp-devices."
        )
    shape = (len(devices) // fsdp_devices, fsdp_devices)
    # Auto axes: the compiler propagates shardings (newer jax.make_mesh defaults to explicit sharding types).
    kwargs = {"axis_types": (AxisType.Auto,) * 2} if AxisType is not None else {}
    if devices == list(jax.devices()):
        try:
            return jax.make_mesh(shape, DATA_AXIS, **kwargs)
        except Exception:  # topology-aware placement is an optimisation only
            logger.debug("jax.make_mesh failed; falling back to device order", exc_info=True)
    return Mesh(np.asarray(devices).reshape(shape), DATA_AXIS, **kwargs)


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def fsdp_spec(shape: tuple[int, ...], itemsize: int, fsdp_size: int, min_size_mbytes: float = 4.0) -> PartitionSpec:
    """Splits the largest axis divisible by fsdp_size over "fsdp"; small or 1-d arrays stay replicated."""
    if fsdp_size <= 1 or len(shape) < 2 or math.prod(shape) * itemsize < min_size_mbytes * 2**20:
        return PartitionSpec()
    for axis in sorted(range(len(shape)), key=lambda i: shape[i], reverse=True):
        if shape[axis] % fsdp_size == 0:
            spec: list[Any] = [None] * len(shape)
            spec[axis] = FSDP_AXIS
            return PartitionSpec(*spec)
    return PartitionSpec()


def fsdp_sharding(tree: Any, mesh: Mesh, *, min_size_mbytes: float = 4.0) -> Any:
    """A tree of NamedShardings for `tree` (arrays or ShapeDtypeStructs)."""
    fsdp_size = mesh.shape[FSDP_AXIS]

    def one(leaf):
        if not hasattr(leaf, "shape"):
            return replicated(mesh)
        itemsize = np.dtype(leaf.dtype).itemsize
        return NamedSharding(mesh, fsdp_spec(tuple(leaf.shape), itemsize, fsdp_size, min_size_mbytes))

    return jax.tree.map(one, tree)


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
    """Fails before compiling when the global batch cannot be split evenly."""
    devices = mesh.devices.size
    if batch_size % devices != 0:
        raise errors.ConfigError(
            f"batch_size={batch_size} is not divisible by the {devices} devices of the mesh; "
            f"use a multiple of {devices} with --batch-size."
        )
    if batch_size % jax.process_count() != 0:
        raise errors.ConfigError(
            f"batch_size={batch_size} is not divisible by the {jax.process_count()} processes; "
            "use a multiple of the process count."
        )
