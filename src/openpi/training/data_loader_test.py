import dataclasses

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openpi.datasets import lerobot
from openpi.datasets import recap_columns_test
from openpi.models import pi0_config
from openpi.shared import errors
from openpi.training import data_loader as _dl


@dataclasses.dataclass(frozen=True)
class _SquareFactory:
    """A picklable factory: item = (index, index^2, a draw seeded by the sample id)."""

    def __call__(self):
        def item(index, sample_id):
            rng = np.random.default_rng(sample_id)
            return {"x": np.array([index, index * index]), "nested": {"r": np.float32(rng.random())}}

        return item


def _collect(loader):
    return [jax.tree.map(np.asarray, b) for b in loader]


def test_sampler_covers_every_frame_once_per_epoch_and_splits_processes():
    sampler = _dl.BatchSampler(range(12), global_batch_size=4, seed=3)
    seen = np.concatenate([sampler.local_batch(s)[0] for s in range(3)])
    assert sorted(seen.tolist()) == list(range(12))
    halves = [_dl.BatchSampler(range(12), 4, seed=3, process_index=p, process_count=2) for p in range(2)]
    for step in range(5):
        a, b = (h.local_batch(step)[0] for h in halves)
        assert not set(a) & set(b)
        np.testing.assert_array_equal(np.concatenate([a, b]), sampler.local_batch(step)[0])
    with pytest.raises(errors.ConfigError, match="multiple of the 2 processes"):
        _dl.BatchSampler(range(12), 3, process_count=2)


@pytest.mark.parametrize("workers,kind", [(0, "thread"), (3, "thread"), (2, "process")])
def test_batches_do_not_depend_on_workers_and_resume_matches(workers, kind):
    sampler = _dl.BatchSampler(range(10), global_batch_size=4, seed=1)
    reference = _collect(_dl.DataLoader(_SquareFactory(), sampler, num_workers=0, num_batches=6))
    got = _collect(_dl.DataLoader(_SquareFactory(), sampler, num_workers=workers, worker_type=kind, num_batches=6))
    for a, b in zip(reference, got, strict=True):
        np.testing.assert_array_equal(a["x"], b["x"])
        np.testing.assert_array_equal(a["nested"]["r"], b["nested"]["r"])
    resumed = _collect(_dl.DataLoader(_SquareFactory(), sampler, num_workers=workers, start_step=4, num_batches=2))
    np.testing.assert_array_equal(resumed[0]["x"], reference[4]["x"])
    np.testing.assert_array_equal(resumed[1]["nested"]["r"], reference[5]["nested"]["r"])


def test_global_arrays_on_a_mesh():
    from openpi.training import sharding

    mesh = sharding.make_mesh(1)
    sampler = _dl.BatchSampler(range(10), global_batch_size=2, seed=0)
    loader = _dl.DataLoader(_SquareFactory(), sampler, sharding=sharding.data_sharding(mesh), num_batches=1)
    batch = next(iter(loader))
    assert isinstance(batch["x"], jax.Array) and batch["x"].shape == (2, 2)
    assert batch["x"].sharding == sharding.data_sharding(mesh)


def test_strings_cannot_be_batched():
    with pytest.raises(errors.DatasetError, match="non-numeric"):
        _dl.stack_items([{"prompt": "a"}, {"prompt": "b"}])


def test_fake_items_follow_the_model_spec():
    model = pi0_config.Pi0Config(paligemma_variant="dummy", action_expert_variant="dummy")
    item = _dl.FakeItemFn(model)(0, 5)
    obs, actions, weights = _dl.batch_to_model_inputs(_dl.stack_items([item, _dl.FakeItemFn(model)(0, 6)]))
    assert obs.state.shape == (2, 32) and actions.shape == (2, 50, 32) and weights is None
    assert obs.tokenized_prompt.shape == (2, model.max_token_len)
    np.testing.assert_array_equal(item["state"], _dl.FakeItemFn(model)(9, 5)["state"])


def test_sampler_permutes_each_epoch_once():
    sampler = _dl.BatchSampler(range(10), global_batch_size=4, seed=1)
    first = [sampler.local_batch(s)[0].tolist() for s in range(6)]
    assert len(sampler.__dict__["_epoch_cache"]) <= 2  # one permutation per epoch, not one per step
    fresh = _dl.BatchSampler(range(10), global_batch_size=4, seed=1)
    assert [fresh.local_batch(s)[0].tolist() for s in range(6)] == first  # the cache changes no batch
    expected = np.concatenate([np.random.default_rng([1, e]).permutation(10) for e in range(3)])
    assert [i for batch in first for i in batch] == expected[:24].tolist()


@pytest.mark.parametrize(
    ("cells", "shown"),
    [
        ([None] * 10, "''"),  # parquet nulls read as ""
        ([""] * 10, "''"),
        (["positive"] * 7 + ["None", "positive", "none"], "'None'"),  # a stringified null is not the word none
        (["positive"] * 5 + ["Positive"] * 5, "'Positive'"),
    ],
)
def test_policy_training_refuses_indicator_cells_that_are_not_the_three_words(tmp_path, cells, shown):
    """Issue 20.1: null / "" indicator cells used to pass and train the unconditional prompt on every frame."""
    root = recap_columns_test.write_labelled(tmp_path / "good").root
    for path in sorted((root / "data").rglob("*.parquet")):
        table = pq.read_table(path)
        n = table.num_rows
        column = pa.array(cells[:n], type=pa.string())
        cells = cells[n:]
        pq.write_table(table.set_column(table.schema.get_field_index("adv_ind"), "adv_ind", column), path)
    ds = lerobot.LeRobotDataset.open(root)
    with pytest.raises(errors.DatasetError, match=rf"'adv_ind' is {shown} at episode \d, frame \d \(index \d+\)") as e:
        _dl.check_dataset(ds, columns=["adv_ind"])
    assert "positive, negative, none" in str(e.value)


def test_policy_training_refuses_a_float_indicator_column(tmp_path):
    """Issue 20.1: an adv_ind column of NaN floats (what pandas writes for a missing label) is not an indicator."""
    ds = recap_columns_test.write_labelled(tmp_path / "good")
    nan = lerobot.copy_with_columns(
        ds,
        tmp_path / "nan",
        {"adv_ind": np.full(len(ds), np.nan, np.float32)},
        features_update={"adv_ind": {"dtype": "float32", "shape": [1]}},
    )
    with pytest.raises(errors.DatasetError, match=r"'adv_ind' of .* holds float32 values, expected strings"):
        _dl.check_dataset(nan, columns=["adv_ind"])
    _dl.check_dataset(ds, columns=["adv_ind"])  # the labelled dataset passes
