"""The relabeller's decoding workers and batching loop, with a toy item pipeline (real spawned processes)."""

import dataclasses

import numpy as np
import pytest

from openpi.relabel import decode
from openpi.relabel import inference
from openpi.relabel import value_cache
from openpi.shared import errors
from openpi.shared import progress


@dataclasses.dataclass(frozen=True)
class _Factory:
    """Frame i -> {"x": [i], "image": {"cam": i-filled 2x2}}; fails at `fail_at` (picklable for the workers)."""

    fail_at: int | None = None

    def __call__(self):
        def item(index: int, sample_id: int) -> dict:
            if index == self.fail_at:
                raise errors.DatasetError(f"frame {index} is corrupt; restore the video.")
            return {"x": np.array([index], np.float32), "image": {"cam": np.full((2, 2), index, np.uint8)}}

        return item


WORKS = [decode.EpisodeWork(e, np.arange(10 * e, 10 * e + n)) for e, n in enumerate([3, 7, 1, 5, 4])]


def _stream(num_workers: int, fail_at: int | None = None):
    return list(decode.decode_episodes(_Factory(fail_at), WORKS, chunk_size=3, num_workers=num_workers, prefetch=2))


def test_workers_stream_episodes_in_order_like_inline_decoding():
    inline, pooled = _stream(0), _stream(2)
    assert [(k, f.tolist()) for k, f, _ in pooled] == [(k, f.tolist()) for k, f, _ in inline]
    np.testing.assert_array_equal(np.concatenate([f for _, f, _ in pooled]), np.concatenate([w.frames for w in WORKS]))
    for _, frames, items in pooled:
        np.testing.assert_array_equal(items["x"][:, 0], frames)
        assert items["image"]["cam"].shape == (len(frames), 2, 2)


def test_a_worker_error_reaches_the_consumer():
    with pytest.raises(errors.DatasetError, match="frame 32 is corrupt"):
        _stream(2, fail_at=32)


def test_batches_are_padded_and_episodes_cached_once_complete(tmp_path):
    cache = value_cache.ValueCache(tmp_path, {"k": 1})
    shapes = []

    def values_fn(batch):
        shapes.append(batch["x"].shape[0])
        return -batch["x"][:, 0] / 100

    bar = progress.Progress(20, enabled=False, process_index=1, process_count=2, run_total=40)
    out = inference.infer_episodes(
        _Factory(), values_fn, WORKS, [100, 101, 102, 103, 104], cache, batch_size=4, num_workers=0, progress=bar
    )
    assert set(shapes) == {4} and bar.done == 20  # 20 frames in 5 batches, the last one padded
    for work in WORKS:
        np.testing.assert_allclose(out[work.episode], -work.frames / 100)
        np.testing.assert_allclose(cache.load(100 + work.episode, work.frames), -work.frames / 100)
    assert "[process 1/2]" in bar.line() and "50% of the run's 40" in bar.line()
