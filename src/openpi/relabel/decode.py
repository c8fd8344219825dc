"""Decoding for the relabeller: worker processes that read whole episodes front to back, ahead of inference.

Why not the training loader: training samples random frames, so its workers seek for every frame; the relabeller
scores every needed frame of an episode in order, so a worker that owns an episode never seeks (the video
decoder reads forward from where it stopped) and decodes several times faster. Workers are processes, not
threads: the transforms after decoding (resize, normalisation, tokenisation) hold the GIL.

Episode k of the work list goes to worker k % num_workers; each worker runs through its episodes in order and puts
chunks of `chunk_size` decoded frames on its own bounded queue (`prefetch` chunks deep). The consumer takes the
chunks in work-list order, so the stream is deterministic whatever the workers' speeds.
"""

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
import dataclasses
import multiprocessing
import os
import pickle
import queue as _queue
from typing import Any

import numpy as np

from openpi.training import data_loader as _data_loader

ItemFactory = Callable[[], Callable[[int, int], dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class EpisodeWork:
    """One episode's frames to score: its position in the dataset and the (sorted) global frame indices."""

    episode: int
    frames: np.ndarray


def concat(chunks: Sequence[Any]) -> Any:
    """Concatenates (nested dicts of) batched arrays along the leading axis."""
    first = chunks[0]
    if isinstance(first, dict):
        return {k: concat([c[k] for c in chunks]) for k in first}
    return np.concatenate(chunks) if len(chunks) > 1 else first


def take(batch: Any, sl: slice | np.ndarray) -> Any:
    if isinstance(batch, dict):
        return {k: take(v, sl) for k, v in batch.items()}
    return batch[sl]


def _chunks(work: EpisodeWork, chunk_size: int) -> list[np.ndarray]:
    return [work.frames[i : i + chunk_size] for i in range(0, len(work.frames), chunk_size)]


def _decode_chunks(item_fn, works: Sequence[tuple[int, EpisodeWork]], chunk_size: int):
    for k, work in works:
        for frames in _chunks(work, chunk_size):
            yield k, frames, _data_loader.stack_items([item_fn(int(i), int(i)) for i in frames])


def _put(out, item: tuple, parent: int) -> None:
    """`out.put`, except that a worker whose parent was killed (SIGKILL cannot stop daemon children) exits instead of
    blocking on a full queue forever."""
    while True:
        try:
            out.put(item, timeout=1.0)
            return
        except _queue.Full:
            if os.getppid() != parent:
                os._exit(0)  # not SystemExit: exiting normally waits for the queue's feeder thread, which never ends


def _worker(factory: ItemFactory, works: list[tuple[int, EpisodeWork]], chunk_size: int, out) -> None:
    """Worker process body: decode the assigned episodes in order; errors travel to the consumer."""
    import sys

    parent = os.getppid()

    if "jax" in sys.modules:  # decoding is numpy; never let a worker claim an accelerator
        import jax

        jax.config.update("jax_platforms", "cpu")
    try:
        item_fn = factory()
        for k, frames, items in _decode_chunks(item_fn, works, chunk_size):
            _put(out, ("chunk", k, frames, items), parent)
    except BaseException as e:
        try:
            pickle.dumps(e)
        except Exception:
            e = RuntimeError(f"{type(e).__name__}: {e}")
        _put(out, ("error", -1, None, e), parent)


def decode_episodes(
    factory: ItemFactory,
    works: Sequence[EpisodeWork],
    *,
    chunk_size: int,
    num_workers: int = 2,
    prefetch: int = 4,
    poll_s: float = 1.0,
) -> Iterator[tuple[int, np.ndarray, dict[str, Any]]]:
    """Yields (work index, frames, stacked items) for every chunk of every work, in work-list order.

    `num_workers=0` decodes inline (tests, debugging). A worker that dies (killed, out of memory) is an error,
    never a hang.
    """
    indexed = list(enumerate(works))
    if not indexed:
        return
    if num_workers == 0:
        yield from _decode_chunks(factory(), indexed, chunk_size)
        return
    num_workers = min(num_workers, len(indexed))
    ctx = multiprocessing.get_context("spawn")
    queues = [ctx.Queue(maxsize=prefetch) for _ in range(num_workers)]
    procs = [
        ctx.Process(target=_worker, args=(factory, indexed[w::num_workers], chunk_size, queues[w]), daemon=True)
        for w in range(num_workers)
    ]
    for p in procs:
        p.start()
    try:
        for k, work in indexed:
            w = k % num_workers
            for _ in range(len(_chunks(work, chunk_size))):
                while True:
                    try:
                        kind, got_k, frames, items = queues[w].get(timeout=poll_s)
                        break
                    except _queue.Empty:
                        if not procs[w].is_alive() and queues[w].empty():
                            raise RuntimeError(
                                f"Decoding worker {w} exited (code {procs[w].exitcode}) before finishing; it was "
                                "killed or ran out of memory: lower --num_workers or --prefetch and rerun (the value "
                                "cache keeps what is done)."
                            ) from None
                if kind == "error":
                    raise items
                assert got_k == k, (got_k, k)
                yield k, frames, items
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
        for q in queues:
            q.cancel_join_thread()
            q.close()
