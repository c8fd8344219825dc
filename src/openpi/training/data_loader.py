"""Batches for training: which frames go into each step, loading them in parallel, placing them on the mesh.

The core is generic (a list of dataset indices, a per-item function, a batch size) so the policy trainer,
the value-model trainer and the relabeller share it:

- `BatchSampler` fixes the frames of every global step from the seed alone: the stream is a concatenation
  of per-epoch permutations, step s takes positions [s*B, (s+1)*B). Each process keeps only its slice of
  every global batch, so hosts read disjoint frames, and a run resumed at step k sees exactly the batches an
  unstopped run sees. Every frame also gets a `sample_id` (its global stream position), from which per-frame
  randomness (indicator dropout, fake data) is seeded: results do not depend on the number of workers.
- `DataLoader` runs the item function on thread or process workers (no torch), keeps a few steps in
  flight, stacks items and, given a sharding, turns the process-local batch into one global `jax.Array`
  with `jax.make_array_from_process_local_data`.
- `create_data_loader` wires a `TrainConfig` to a LeRobot dataset through the transform chain.
"""

import collections
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
import concurrent.futures
import dataclasses
import multiprocessing
import threading
from typing import Any

import jax
import numpy as np

from openpi import transforms as _transforms
from openpi.datasets import recap_columns
from openpi.models import model as _model
from openpi.recap import vocab
from openpi.shared import errors

# (dataset index, sample id) -> one example (a nested dict of numpy arrays).
ItemFn = Callable[[int, int], dict[str, Any]]
# The one item-factory protocol (policy and value items alike): a picklable callable that builds an ItemFn,
# called once per worker (thread or process) and once for inline loading.
ItemFnFactory = Callable[[], ItemFn]


def open_dataset(repo_id: str | None) -> Any:
    """Opens a LeRobot dataset root or `<org>/<name>` (one sentence when none is configured)."""
    from openpi.datasets import lerobot

    if repo_id is None:
        raise errors.ConfigError("No dataset configured; pass the dataset root (--data.repo-id or --data_dir).")
    return lerobot.LeRobotDataset.open(repo_id)


@dataclasses.dataclass(frozen=True)
class BatchSampler:
    """Deterministic assignment of dataset indices to (step, position), and of positions to processes."""

    indices: Sequence[int]
    global_batch_size: int
    seed: int = 0
    shuffle: bool = True
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        if len(self.indices) == 0:
            raise errors.DatasetError("The data loader got no frames to sample from; check the dataset and filters.")
        if self.global_batch_size < 1 or self.global_batch_size % self.process_count != 0:
            raise errors.ConfigError(
                f"Global batch size {self.global_batch_size} must be a positive multiple of the "
                f"{self.process_count} processes; change --batch-size."
            )
        object.__setattr__(self, "indices", np.asarray(self.indices, dtype=np.int64))

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.process_count

    def _epoch(self, epoch: int) -> np.ndarray:
        """The epoch's order, computed once: permuting every frame on every step costs O(N) per batch."""
        if not self.shuffle:
            return self.indices
        cache = self.__dict__.setdefault("_epoch_cache", {})
        if epoch not in cache:
            for old in [e for e in cache if e < epoch - 1]:
                del cache[old]  # steps move forward: keep this epoch and the previous one
            cache[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.indices)
        return cache[epoch]

    def positions(self, step: int) -> np.ndarray:
        """Global stream positions of this process's part of step `step` (these are the sample ids)."""
        start = step * self.global_batch_size + self.process_index * self.local_batch_size
        return np.arange(start, start + self.local_batch_size, dtype=np.int64)

    def local_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(dataset indices, sample ids) of this process's slice of global step `step`."""
        positions = self.positions(step)
        n = len(self.indices)
        epochs = positions // n
        out = np.empty_like(positions)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            out[sel] = self._epoch(int(epoch))[positions[sel] % n]
        return out, positions


def stack_items(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stacks a list of nested dicts of arrays into one nested dict of [B, ...] arrays."""

    def stack(*xs):
        arrays = [np.asarray(x) for x in xs]
        if arrays[0].dtype.kind in "OUS":
            raise errors.DatasetError(
                f"Cannot batch a non-numeric field of dtype {arrays[0].dtype}; a transform must turn it into "
                "numbers (e.g. tokenize the prompt) or drop it."
            )
        return np.stack(arrays)

    return jax.tree.map(stack, *items)


_thread_state = threading.local()
_process_item_fn: ItemFn | None = None


def _thread_item(factory: ItemFnFactory, index: int, sample_id: int) -> dict[str, Any]:
    fns = getattr(_thread_state, "fns", None)
    if fns is None:
        fns = _thread_state.fns = {}
    fn = fns.get(id(factory))
    if fn is None:
        fn = fns[id(factory)] = factory()
    return fn(index, sample_id)


def _process_init(factory: ItemFnFactory) -> None:
    global _process_item_fn
    _process_item_fn = factory()


def _process_items(pairs: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    assert _process_item_fn is not None
    return [_process_item_fn(int(i), int(s)) for i, s in pairs]


class DataLoader:
    """Iterates batches from `start_step` on (forever, or `num_batches` of them).

    worker_type "thread" (default) suits decoding that releases the GIL (PyAV, numpy, PIL); "process" uses
    spawned processes, for which `item_fn_factory` must be picklable. `num_workers=0` loads inline.
    """

    def __init__(
        self,
        item_fn_factory: ItemFnFactory,
        sampler: BatchSampler,
        *,
        num_workers: int = 0,
        worker_type: str = "thread",
        sharding: jax.sharding.Sharding | None = None,
        prefetch: int = 2,
        start_step: int = 0,
        num_batches: int | None = None,
    ):
        if worker_type not in ("thread", "process"):
            raise errors.ConfigError(f"worker_type must be 'thread' or 'process', got {worker_type!r}.")
        self._factory = item_fn_factory
        self.sampler = sampler
        self._num_workers = max(0, num_workers)
        self._worker_type = worker_type
        self._sharding = sharding
        self._prefetch = max(1, prefetch)
        self.start_step = start_step
        self._num_batches = num_batches
        self._inline_fn: ItemFn | None = None

    def _executor(self) -> concurrent.futures.Executor | None:
        if self._num_workers == 0:
            return None
        if self._worker_type == "thread":
            return concurrent.futures.ThreadPoolExecutor(self._num_workers, thread_name_prefix="data")
        return concurrent.futures.ProcessPoolExecutor(
            self._num_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_process_init,
            initargs=(self._factory,),
        )

    def _submit(self, pool: concurrent.futures.Executor | None, step: int) -> list[Any]:
        indices, sample_ids = self.sampler.local_batch(step)
        pairs = list(zip(indices.tolist(), sample_ids.tolist(), strict=True))
        if pool is None:
            if self._inline_fn is None:
                self._inline_fn = self._factory()
            return [self._inline_fn(i, s) for i, s in pairs]
        if self._worker_type == "thread":
            return [pool.submit(_thread_item, self._factory, i, s) for i, s in pairs]
        chunks = np.array_split(np.arange(len(pairs)), self._num_workers)
        return [pool.submit(_process_items, [pairs[j] for j in chunk]) for chunk in chunks if len(chunk)]

    def _collect(self, pending: list[Any]) -> dict[str, Any]:
        if pending and isinstance(pending[0], concurrent.futures.Future):
            results = [f.result() for f in pending]
            items = results if self._worker_type == "thread" else [x for chunk in results for x in chunk]
        else:
            items = pending
        return stack_items(items)

    def to_global(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Process-local numpy batch -> global jax.Arrays split over the sharding's devices."""
        if self._sharding is None:
            return batch
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self._sharding, x), batch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pool = self._executor()
        try:
            step = self.start_step
            end = None if self._num_batches is None else self.start_step + self._num_batches
            queue: collections.deque[list[Any]] = collections.deque()
            next_submit = step
            while end is None or step < end:
                while len(queue) < self._prefetch and (end is None or next_submit < end):
                    queue.append(self._submit(pool, next_submit))
                    next_submit += 1
                yield self.to_global(self._collect(queue.popleft()))
                step += 1
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------------------------------ policy training


def _repack_keys(repack: Sequence[_transforms.DataTransformFn]) -> list[str] | None:
    keys: list[str] = []
    for transform in repack:
        if not isinstance(transform, _transforms.RepackTransform):
            return None
        keys.extend(_transforms.flatten_dict(transform.structure).values())
    return keys


class FrameCache:
    """Frames already read and normalised, by dataset index, up to a byte budget (shared by a process's threads).

    Why: reading a frame (parquet row group, PNG or video decode) costs far more than the rest of the chain, and
    a small dataset is read thousands of times over. What is cached is the frame after repack -> robot ->
    `Normalize`, which depend on the frame alone; the model transforms (tokenising with per-sample indicator
    dropout, padding) still run for every sample, so the batches are exactly those of an uncached loader. Once the
    budget is full, further frames are read as before. Process workers each start with an empty cache.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: dict[int, dict[str, Any]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_bytes"])

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, index: int) -> dict[str, Any] | None:
        return self._items.get(index)

    def put(self, index: int, item: dict[str, Any]) -> None:
        size = sum(np.asarray(x).nbytes for x in jax.tree.leaves(item))
        with self._lock:
            if index not in self._items and self._bytes + size <= self.max_bytes:
                self._items[index] = item
                self._bytes += size


def read_frame(dataset: Any, data_config: Any, index: int, keys: list[str] | None, horizon: int) -> dict[str, Any]:
    """Frame `index` as the repack transform reads it: the features `keys`, the action chunk of `horizon` steps
    under the action key, the task text as `prompt` (when the config reads it) and the per-frame `loss_weight`.

    The one reading rule for everything that feeds a policy dataset frame through a config's transforms (the
    training loader and the policy probe). A config that reads the indicator gets each frame's cell checked here
    (`recap_columns.check_indicator_cell`), so no caller can skip the check, whatever it ran before."""
    dc = data_config
    frame = dataset.get(index, keys=keys)
    if vocab.ADV_IND in dc.required_columns and vocab.ADV_IND in frame:
        recap_columns.check_indicator_cell(dataset, index, frame[vocab.ADV_IND])
    frame[dc.action_key] = dataset.action_chunk(index, dc.action_key, horizon)[0]
    if dc.prompt_from_task:
        frame["prompt"] = frame["task"]
    if dc.loss_weight_column is not None:
        value = float(np.asarray(frame[dc.loss_weight_column], dtype=np.float32).reshape(-1)[0])
        frame["loss_weight"] = np.float32(1.0 + (dc.loss_weight_scale - 1.0) * value)
    return frame


@dataclasses.dataclass(frozen=True)
class PolicyItemFactory:
    """Frame i -> model inputs: read the frame and its action chunk, repack, robot, normalize, model transforms.

    Picklable (a config, not open files), so process workers can build their own dataset readers.
    """

    data_config: Any  # training.config.DataConfig
    model_config: Any  # a BaseModelConfig
    # The dataset opened once by the process (thread workers share it, process workers unpickle it once);
    # None opens `data_config.repo_id` here.
    dataset: Any = None
    # Normalised frames kept across steps (see FrameCache); None reads every frame every time.
    cache: FrameCache | None = None

    def __call__(self) -> ItemFn:
        dc = self.data_config
        if dc.fake_data:
            return FakeItemFn(self.model_config)
        dataset = self.dataset if self.dataset is not None else open_dataset(dc.repo_id)
        repack = _transforms.compose(dc.repack_transforms.inputs)
        per_frame = _transforms.compose(
            [*dc.data_transforms.inputs, _transforms.Normalize(dc.norm_stats, use_quantiles=dc.use_quantile_norm)]
        )
        per_sample = _transforms.compose(dc.model_transforms.inputs)
        cache = self.cache
        wanted = _repack_keys(dc.repack_transforms.inputs)
        keys = None
        if wanted is not None:
            extra = [dc.loss_weight_column] if dc.loss_weight_column is not None else []
            keys = list(dict.fromkeys(k for k in [*wanted, *extra] if k in dataset.features))
        horizon = self.model_config.action_horizon

        def normalised_frame(index: int) -> dict[str, Any]:
            return per_frame(repack(read_frame(dataset, dc, index, keys, horizon)))

        def item(index: int, sample_id: int) -> dict[str, Any]:
            data = cache.get(index) if cache is not None else None
            if data is None:
                data = normalised_frame(index)
                if cache is not None:
                    cache.put(index, data)
            data = dict(data)
            data["sample_id"] = sample_id
            data = per_sample(data)
            data.pop("sample_id", None)
            return data

        return item


def batch_spec(model_config: Any, batch_size: int) -> dict[str, Any]:
    """A policy training batch as `jax.ShapeDtypeStruct`s (the model's input spec plus the actions): what a train
    step is lowered on when nothing may be allocated (compile-only budgets)."""
    obs, actions = model_config.inputs_spec(batch_size=batch_size)
    return {**_model.Observation.to_dict(obs), "actions": actions}


@dataclasses.dataclass(frozen=True)
class FakeItemFn:
    """Random model inputs from the model's input spec, seeded by the sample id (openpi's fake dataset)."""

    model_config: Any

    def __call__(self, index: int, sample_id: int) -> dict[str, Any]:
        del index
        rng = np.random.default_rng([0xFA4E, sample_id])
        obs_spec, act_spec = self.model_config.inputs_spec(batch_size=1)

        def sample(spec):
            shape = spec.shape[1:]
            if spec.dtype == np.bool_:
                return np.ones(shape, bool)
            if np.issubdtype(spec.dtype, np.integer):
                return rng.integers(0, 1000, size=shape, dtype=np.int32)
            return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)

        obs = jax.tree.map(sample, obs_spec)
        return {**_model.Observation.to_dict(obs), "actions": sample(act_spec)}


def check_dataset(
    dataset: Any, *, columns: Sequence[str] = (), features: Sequence[str] = (), fix: str = "fix the config"
) -> None:
    """Fails fast (before compiling) when the dataset lacks what a config reads, with one sentence.

    The one dataset check of every trainer: `columns` are non-camera parquet columns, `features` any feature
    (cameras included); an `adv_ind` column must hold only positive / negative / none.
    """
    for column in columns:
        if not dataset.has_column(column):
            hint = (
                " Label it first (scripts/label_advantage_from_vlm.py) or use a config without the indicator."
                if column == vocab.ADV_IND
                else f" {fix[0].upper()}{fix[1:]} or the dataset."
            )
            raise errors.DatasetError(f"Dataset {dataset.root} has no column {column!r} that the config reads.{hint}")
    missing = [k for k in features if k not in dataset.features]
    if missing:
        raise errors.DatasetError(
            f"Dataset {dataset.root} lacks features {missing} that the config reads (it has "
            f"{sorted(dataset.features)}); {fix} or the dataset."
        )
    if len(dataset) == 0:
        raise errors.DatasetError(f"Dataset {dataset.root} has no frames.")
    if vocab.ADV_IND in columns:
        recap_columns.check_indicator_column(dataset)


def check_policy_dataset(dataset: Any, data_config: Any) -> None:
    """`check_dataset` with what a policy `DataConfig` reads: its required columns and its repack's features."""
    synthetic = {"prompt", "loss_weight", data_config.action_key}
    wanted = [k for k in _repack_keys(data_config.repack_transforms.inputs) or [] if k not in synthetic]
    check_dataset(
        dataset, columns=data_config.required_columns, features=wanted, fix="fix the config's columns or repack"
    )


def create_data_loader(
    config: Any,
    *,
    sharding: jax.sharding.Sharding | None = None,
    data_config: Any = None,
    dataset: Any = None,
    start_step: int = 0,
    num_batches: int | None = None,
    worker_type: str = "thread",
    fake_num_frames: int = 1024,
) -> DataLoader:
    """The training loader for a `TrainConfig`: this process's share of every global batch, as global arrays.

    `dataset`: the dataset already opened and checked (by the trainer's preflight), so it is opened once.
    """
    data_config = data_config or config.create_data_config(train=True)
    if data_config.fake_data:
        indices = range(fake_num_frames)
    else:
        if dataset is None:
            dataset = open_dataset(data_config.repo_id)
            check_policy_dataset(dataset, data_config)
        indices = range(len(dataset))
    sampler = BatchSampler(
        indices,
        config.batch_size,
        seed=config.seed,
        shuffle=True,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    cache = FrameCache(int(config.frame_cache_gb * 2**30)) if config.frame_cache_gb > 0 else None
    factory = PolicyItemFactory(data_config, config.model, dataset, cache)
    return DataLoader(
        factory,
        sampler,
        num_workers=config.num_workers,
        worker_type=worker_type,
        sharding=sharding,
        start_step=start_step,
        num_batches=num_batches,
    )


def batch_to_model_inputs(batch: dict[str, Any]) -> tuple[_model.Observation, Any, Any]:
    """(Observation, actions, per-frame loss weights or None) from a loader batch."""
    weights = batch.get("loss_weight")
    return _model.Observation.from_dict(batch), batch["actions"], weights
