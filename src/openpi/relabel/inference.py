"""Value inference for the relabeller: the model on every local device, fed by the decoding workers.

- `make_values_fn` puts the value model's params on this process's devices ONCE (passing host params into the jitted
  function would copy ~1.4 GB per batch at full size) and splits each batch over the local devices.
- `infer_episodes` streams decoded chunks (episodes in a fixed order) into fixed-size batches, pads only the last
  one, and saves an episode's values to the cache as soon as its last frame is scored, so a killed run loses at most
  the episodes in flight.

Every batch has the same shape and the model scores each row on its own, so a frame's value does not depend on
which frames share its batch: a resumed run, or the same episode on another process, gives the same bytes.
"""

from collections.abc import Callable
from collections.abc import Sequence
import logging
from typing import Any

import numpy as np

from openpi.relabel import decode as _decode
from openpi.relabel import value_cache as _value_cache
from openpi.shared import progress as _progress

logger = logging.getLogger("openpi.relabel")

# batch of value-model inputs -> values [B]
ValuesFn = Callable[[dict[str, Any]], Any]


def device_batch_size(batch_size: int, num_devices: int) -> int:
    """`batch_size` rounded up to a multiple of `num_devices`, so every batch splits evenly over the local devices
    (the extra rows are padding that is scored and dropped) instead of being copied whole onto each device."""
    return -(-batch_size // num_devices) * num_devices


def make_values_fn(model: Any, params: Any, *, fsdp_devices: int = 1, devices: Sequence[Any] | None = None) -> ValuesFn:
    """batch -> values [B] on this process's devices (`jax.local_devices()` by default), params placed once.

    The params are laid out like training (`sharding.fsdp_sharding`: replicated with the default fsdp_devices=1,
    large arrays split over `fsdp_devices`); each batch is split over the devices, padded with its last row to a
    multiple of the device count when it does not divide (the padding's values are dropped). Only local devices:
    processes of a multi-host run score their own episodes and never wait on each other during inference.
    """
    import jax

    from openpi.training import sharding as _sharding
    from openpi.training import value_checkpoint

    mesh = _sharding.make_mesh(fsdp_devices, list(jax.local_devices() if devices is None else devices))
    device_params = jax.device_put(params, _sharding.fsdp_sharding(params, mesh))
    batch_split = _sharding.data_sharding(mesh)
    num_devices = mesh.devices.size

    def values_fn(batch: dict[str, Any]) -> np.ndarray:
        size = len(next(iter(jax.tree.leaves(batch))))
        padded = device_batch_size(size, num_devices)
        if padded != size:
            rows = np.concatenate([np.arange(size), np.full(padded - size, size - 1)])
            batch = _decode.take(batch, rows)
        batch = jax.device_put(batch, batch_split)
        return np.asarray(value_checkpoint.predict_values(model, device_params, batch))[:size]

    values_fn.num_devices = num_devices  # type: ignore[attr-defined]
    return values_fn


def infer_episodes(
    item_factory: _decode.ItemFactory,
    values_fn: ValuesFn,
    works: Sequence[_decode.EpisodeWork],
    episode_ids: Sequence[int],
    cache: _value_cache.ValueCache,
    *,
    batch_size: int,
    num_workers: int = 2,
    prefetch: int = 4,
    progress: _progress.Progress | None = None,
) -> dict[int, np.ndarray]:
    """Values of every work's frames ({episode position: values}); each episode is cached once complete.

    The batch size is rounded up to a multiple of the values fn's device count (`num_devices`, when it has one).
    """
    out: dict[int, np.ndarray] = {}
    if not works:
        return out
    num_devices = getattr(values_fn, "num_devices", 1)
    if batch_size % num_devices:
        rounded = device_batch_size(batch_size, num_devices)
        logger.info(
            "Batch size %d does not divide over %d local devices; scoring batches of %d (padding rows dropped).",
            batch_size, num_devices, rounded,
        )  # fmt: skip
        batch_size = rounded
    filled = {k: 0 for k in range(len(works))}
    values = {k: np.full(len(w.frames), np.nan, np.float32) for k, w in enumerate(works)}
    pending: list[tuple[int, int, int, Any]] = []  # (work, offset in work, rows, items)
    buffered = 0
    offsets = dict.fromkeys(range(len(works)), 0)

    def run(rows: int) -> None:
        """Scores the first `rows` buffered frames (padded to batch_size with the last one)."""
        nonlocal buffered
        parts, owners, taken = [], [], 0
        while taken < rows:
            k, off, n, items = pending[0]
            use = min(n, rows - taken)
            parts.append(_decode.take(items, slice(0, use)))
            owners.append((k, off, use))
            if use == n:
                pending.pop(0)
            else:
                pending[0] = (k, off + use, n - use, _decode.take(items, slice(use, None)))
            taken += use
        batch = _decode.concat(parts)
        if rows < batch_size:  # the last batch: repeat its last frame, so every batch has one shape
            pad = np.full(batch_size - rows, rows - 1)
            batch = _decode.take(batch, np.concatenate([np.arange(rows), pad]))
        scored = np.asarray(values_fn(batch), np.float32).reshape(-1)[:rows]
        buffered -= rows
        pos = 0
        for k, off, use in owners:
            values[k][off : off + use] = scored[pos : pos + use]
            pos += use
            filled[k] += use
            if filled[k] == len(works[k].frames):
                cache.save(episode_ids[works[k].episode], works[k].frames, values[k])
                out[works[k].episode] = values.pop(k)
        if progress is not None:
            progress.update(rows)

    for k, frames, items in _decode.decode_episodes(
        item_factory, works, chunk_size=batch_size, num_workers=num_workers, prefetch=prefetch
    ):
        pending.append((k, offsets[k], len(frames), items))
        offsets[k] += len(frames)
        buffered += len(frames)
        while buffered >= batch_size:
            run(batch_size)
    if buffered:
        run(buffered)
    return out
