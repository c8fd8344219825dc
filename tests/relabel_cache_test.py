"""The per-episode value cache and the fixed batching that make a killed relabelling run resumable."""

import time

import numpy as np
import pytest

from openpi.relabel import inference
from openpi.relabel import relabel
from openpi.shared import atomic
from openpi.shared import errors


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


def test_episode_split_is_deterministic_contiguous_and_balanced():
    sizes = [10, 10, 10, 10, 40, 5, 5, 5, 5]
    owner = relabel.assign_episodes(sizes, 2)
    np.testing.assert_array_equal(owner, relabel.assign_episodes(sizes, 2))  # every process computes the same
    assert list(owner) == sorted(owner) and set(owner.tolist()) == {0, 1}  # contiguous runs, both used
    per = [sum(s for s, o in zip(sizes, owner, strict=True) if o == p) for p in (0, 1)]
    assert abs(per[0] - per[1]) <= 40
    np.testing.assert_array_equal(relabel.assign_episodes(sizes, 1), 0)
    assert set(relabel.assign_episodes([3] * 8, 8).tolist()) == set(range(8))
    assert len(relabel.assign_episodes([], 4)) == 0


def test_episode_works_group_needed_frames_by_episode():
    from openpi.relabel import columns

    bounds = [(0, 4), (4, 6), (6, 10)]
    zeros = np.zeros(10)
    cols = columns.DatasetColumns(zeros, zeros, zeros, zeros, bounds, [7, 8, 9])
    works = relabel.episode_works(cols, np.array([1, 2, 6, 9]))
    assert [w.episode for w in works] == [0, 2]  # episode 1 has nothing to score
    np.testing.assert_array_equal(works[1].frames, [6, 9])


def test_process_errors_name_the_first_failing_process(tmp_path):
    relabel.raise_process_errors(tmp_path, 3)  # no error files: nothing to raise
    atomic.write_text(tmp_path / "process_00002.error", "Frame 7 of episode 3 is damaged.")
    time.sleep(0.01)
    atomic.write_text(tmp_path / "process_00000.error", "JaxRuntimeError: a peer went away.")
    with pytest.raises(relabel.ProcessError, match=r"process 2 failed \(processes \[0, 2\] failed\): Frame 7") as e:
        relabel.raise_process_errors(tmp_path, 3)
    assert isinstance(e.value, errors.UserError)
    # Only this run's processes count (a stale file of a process index beyond the count is ignored).
    with pytest.raises(relabel.ProcessError, match="process 0 failed: JaxRuntimeError"):
        relabel.raise_process_errors(tmp_path, 2)


def test_batch_size_rounds_up_to_the_local_device_count():
    assert [inference.device_batch_size(b, 4) for b in (1, 4, 5, 8, 9)] == [4, 4, 8, 8, 12]
    assert inference.device_batch_size(7, 1) == 7
