"""The per-episode value cache and the fixed batching that make a killed relabelling run resumable."""

import numpy as np

from openpi.recap import relabel


def test_cache_round_trip_and_invalidation(tmp_path):
    key = {"checkpoint": "/runs/a", "checkpoint_files": [["params/x", 10, 1]], "batch_size": 4}
    cache = relabel.ValueCache(tmp_path, key)
    frames = np.array([3, 4, 5, 9])
    values = np.array([-0.5, -0.4, -0.3, -0.1], np.float32)
    assert cache.load(7, frames) is None
    cache.save(7, frames, values)
    np.testing.assert_array_equal(cache.load(7, frames), values)
    # Other frames (e.g. another --lookahead) are a miss, not a wrong answer.
    assert cache.load(7, np.array([3, 4, 5])) is None
    # A truncated file (a crash of another tool, a full disk) is a miss too.
    cache.path(8).write_bytes(b"PK\x03\x04garbage")
    assert cache.load(8, frames) is None
    # A retrained checkpoint (different files) gets its own cache directory.
    other = relabel.ValueCache(tmp_path, {**key, "checkpoint_files": [["params/x", 10, 2]]})
    assert other.dir != cache.dir and other.load(7, frames) is None
    assert relabel.ValueCache(tmp_path, dict(key)).dir == cache.dir
    assert not list(tmp_path.rglob("*.tmp"))


def test_fixed_batches_do_not_depend_on_what_is_cached():
    needed = np.arange(0, 23)
    batches = relabel.fixed_batches(needed, 5)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate(batches), needed)
    # Resuming recomputes whole batches from this same list, so a frame always sits in the same batch slot.
    again = relabel.fixed_batches(needed, 5)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
