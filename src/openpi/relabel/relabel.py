"""Relabelling (RECAP stage 5), the orchestration: value inference over a dataset -> N-step advantages -> `adv_ind`.

The pieces, one concept per module: `relabel_config` (RelabelConfig and the registered configs), `columns` (the
per-frame columns the advantage reads), `model_loading` (checkpoint -> item factory + values fn), `decode` (worker
processes that decode whole episodes ahead of inference), `inference` (the batched loop on every local device),
`value_cache` (per-episode values, the unit of resumption), `progress`, and `advantage` + `report`.

Why it looks like this:
- Episodes come from the dataset's episode table, never from files: LeRobot v3.0 stores many episodes per file.
- Only the frames that matter are scored: autonomous frames and their t+N bootstrap frames.
- Many processes (`jax.distributed`, started like training): the episodes are split over the processes in one
  deterministic way; each process scores its own on its local devices and writes their values to the shared
  per-episode cache. After a barrier process 0 reads every episode's values, computes the per-task thresholds over
  ALL autonomous frames (a task is never thresholded per shard) and writes the dataset and the report. A killed
  process or host leaves complete episodes behind; rerunning the same command resumes from them.
- Each frame's value depends only on the frame (fixed batch shape, rows scored independently), so one process,
  many processes and a resumed run write byte-identical datasets.
- The source dataset is never touched unless `in_place`: by default a new dataset is written at `output_dir`
  (unchanged videos hard-linked), and `in_place` replaces files atomically.
"""

from collections.abc import Callable
import dataclasses
import json
import logging
import os
import pathlib
import sys
import time
from typing import Any

import numpy as np

from openpi.recap import advantage as _adv
from openpi.recap import provenance
from openpi.recap import vocab
from openpi.relabel import decode as _decode
from openpi.relabel import inference as _inference
from openpi.relabel import report as _report
from openpi.relabel.columns import DatasetColumns
from openpi.relabel.columns import read_columns
from openpi.relabel.inference import ValuesFn
from openpi.relabel.model_loading import load_model
from openpi.relabel.relabel_config import CONFIGS  # noqa: F401 (re-exported)
from openpi.relabel.relabel_config import RelabelConfig
from openpi.relabel.relabel_config import get_config  # noqa: F401 (re-exported)
from openpi.relabel.value_cache import ValueCache
from openpi.shared import atomic
from openpi.shared import errors
from openpi.shared import progress as _progress
from openpi.training import distributed as _distributed

logger = logging.getLogger("openpi.relabel")

# How long a process waits at a barrier for the others (a large dataset's last episodes, process 0's dataset write).
BARRIER_TIMEOUT_S = 24 * 3600

Model = tuple[Callable[[], Any], ValuesFn, dict[str, Any]]


# ------------------------------------------------------------------------------------------ the episode split


def episode_works(cols: DatasetColumns, needed: np.ndarray) -> list[_decode.EpisodeWork]:
    """The needed frames grouped by episode (dataset order); episodes with nothing to score are left out."""
    works = []
    for e, (start, stop) in enumerate(cols.bounds):
        lo, hi = np.searchsorted(needed, [start, stop])
        if hi > lo:
            works.append(_decode.EpisodeWork(episode=e, frames=needed[lo:hi]))
    return works


def assign_episodes(sizes: Any, num_processes: int) -> np.ndarray:
    """Process of each episode: contiguous runs of episodes with about equal frame counts per process.

    Depends only on the sizes and the process count, so every process computes the same split without talking.
    """
    sizes = np.asarray(sizes, np.float64)
    if len(sizes) == 0:
        return np.zeros(0, np.int64)
    middle = np.cumsum(sizes) - sizes / 2
    return np.minimum((middle * num_processes // sizes.sum()).astype(np.int64), num_processes - 1)


# --------------------------------------------------------------------------------------------- processes


@dataclasses.dataclass(frozen=True)
class Processes:
    """Where this process sits in the run: its index, the process count, its local and the global device count."""

    index: int = 0
    count: int = 1
    local_devices: int = 1
    devices: int = 1

    @classmethod
    def current(cls) -> "Processes":
        import jax

        return cls(jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())

    def barrier(self, name: str) -> None:
        """Waits until every process reached `name` (no-op with one process)."""
        if self.count > 1:
            _distributed.barrier(name, timeout_s=BARRIER_TIMEOUT_S)


def _stats_path(cache: ValueCache, index: int) -> pathlib.Path:
    return cache.dir / f"process_{index:05d}.json"


# ----------------------------------------------------------------------------------------------- values


def collect_values(
    cols: DatasetColumns,
    works: list[_decode.EpisodeWork],
    cache: ValueCache,
    what: str,
) -> np.ndarray:
    """Every work's values from the cache into one flat array (NaN where not needed); a missing episode is an error."""
    values = np.full(len(cols.reward), np.nan, np.float32)
    for work in works:
        cached = cache.load(cols.episode_ids[work.episode], work.frames)
        if cached is None:
            raise errors.DatasetError(
                f"The value cache {cache.dir} has no values for episode {cols.episode_ids[work.episode]} after {what}; "
                "with several hosts --cache_dir must be on storage every host sees. Rerun the same command to resume."
            )
        values[work.frames] = cached
    return values


def score_works(
    item_factory: Callable[[], Any],
    values_fn: ValuesFn,
    cols: DatasetColumns,
    works: list[_decode.EpisodeWork],
    cache: ValueCache,
    *,
    batch_size: int,
    num_workers: int = 2,
    prefetch: int = 4,
    progress: bool = True,
    processes: "Processes | None" = None,
    run_total: int | None = None,
) -> dict[str, Any]:
    """Scores the works the cache lacks into the cache; returns this process's stats (the one inference loop that
    `relabel` and `infer_values` share)."""
    procs = processes if processes is not None else Processes()
    todo = [w for w in works if cache.load(cols.episode_ids[w.episode], w.frames) is None]
    computed = int(sum(len(w.frames) for w in todo))
    bar = _progress.Progress(
        computed,
        "values",
        enabled=progress,
        process_index=procs.index,
        process_count=procs.count,
        run_total=run_total,
    )
    t0 = time.monotonic()
    _inference.infer_episodes(
        item_factory, values_fn, todo, cols.episode_ids, _maybe_pausing(cache),
        batch_size=batch_size, num_workers=num_workers, prefetch=prefetch, progress=bar,
    )  # fmt: skip
    total = int(sum(len(w.frames) for w in works))
    return {
        "episodes": len(works),
        "frames_total": total,
        "frames_cached": total - computed,
        "frames_computed": computed,
        "frames_per_s": bar.rate if computed else 0.0,
        "inference_s": time.monotonic() - t0,
    }


def infer_values(
    item_factory: Callable[[], Any],
    values_fn: ValuesFn,
    cols: DatasetColumns,
    needed: np.ndarray,
    cache: ValueCache,
    *,
    batch_size: int,
    num_workers: int = 2,
    prefetch: int = 4,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Values at `needed` frames (NaN elsewhere) in this one process, resuming from and filling the cache."""
    works = episode_works(cols, needed)
    stats = score_works(
        item_factory, values_fn, cols, works, cache,
        batch_size=batch_size, num_workers=num_workers, prefetch=prefetch, progress=progress,
    )  # fmt: skip
    return collect_values(cols, works, cache, "inference"), stats


# ------------------------------------------------------------------------------------------ test-only hooks

# Test-only: a process whose index is this value fails before the first barrier (exercises the error files).
FAIL_PROCESS_ENV = "OPENPI_RELABEL_TEST_FAIL_PROCESS"
# Test-only: a process blocks (until killed) once it has written this many episodes to the cache.
PAUSE_AFTER_EPISODES_ENV = "OPENPI_RELABEL_TEST_PAUSE_AFTER_EPISODES"


class _PausingCache:
    """The cache, except that `save` blocks forever after `after` episodes: lets a test kill a process mid-run
    at a known point instead of racing it."""

    def __init__(self, cache: ValueCache, after: int):
        self._cache, self._after, self._saved = cache, after, 0

    def save(self, episode_id: int, frames: np.ndarray, values: np.ndarray) -> None:
        self._cache.save(episode_id, frames, values)
        self._saved += 1
        while self._saved >= self._after:
            time.sleep(1.0)


def _maybe_pausing(cache: ValueCache) -> Any:
    after = os.environ.get(PAUSE_AFTER_EPISODES_ENV)
    return _PausingCache(cache, int(after)) if after else cache


# ------------------------------------------------------------------------------------- errors across processes


class ProcessError(errors.UserError):
    """A process of a multi-process run failed before the values were complete (its message says why)."""


def _error_path(root: pathlib.Path, index: int) -> pathlib.Path:
    return root / f"process_{index:05d}.error"


def _one_sentence(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, errors.UserError) else f"{type(exc).__name__}: {text}"


def raise_process_errors(root: pathlib.Path, count: int) -> None:
    """Raises one `ProcessError` naming the first process that left an error file under `root` (after a barrier,
    so every process raises the same error instead of waiting for a peer that will never arrive)."""
    failed = [i for i in range(count) if _error_path(root, i).is_file()]
    if not failed:
        return
    # The first to fail is most likely the cause (the others may have failed waiting for it).
    first = min(failed, key=lambda i: _error_path(root, i).stat().st_mtime_ns)
    others = f" (processes {failed} failed)" if len(failed) > 1 else ""
    raise ProcessError(
        f"Relabelling process {first} failed{others}: {_error_path(root, first).read_text().strip()} Fix that and "
        "rerun the same command; finished episodes are resumed from the cache."
    )


# -------------------------------------------------------------------------------------------- the output


def _remove_stale_staging(target: pathlib.Path) -> None:
    """Removes hidden staging copies of `target` left by a run killed while writing (the writer's naming)."""
    import shutil

    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def _write_provenance(
    config: RelabelConfig,
    ds: Any,
    target: pathlib.Path,
    key: dict[str, Any],
    source_fingerprint: str,
    result: _adv.AdvantageResult,
) -> None:
    """meta/recap.json of the relabelled dataset: the source's label scale carried over, plus how `adv_ind` was made."""
    source_meta = provenance.read(ds.root) or {}
    scale = source_meta.get("label_scale")
    if scale is None:
        print(
            f"warning: {ds.root} records no label scale (no {provenance.RECAP_META_PATH}); the relabelled dataset "
            "records it as unknown, and merging it needs --rescale-labels.",
            file=sys.stderr,
        )
    tasks = dict(ds.tasks)
    checkpoint = key.get("value_checkpoint")
    if checkpoint is not None and "run" not in checkpoint:  # the key holds content only; record where it was read
        from openpi.training import value_checkpoint

        run_dir, _ = value_checkpoint.locate(config.resolved_checkpoint_dir(), config.step)
        checkpoint = {"run": str(run_dir), **checkpoint}
    provenance.write(
        target,
        {
            "label_scale": scale,
            "relabel": {
                "value_checkpoint": checkpoint,
                "source": {"root": str(ds.root), "fingerprint": source_fingerprint},
                "lookahead": config.lookahead,
                "top_percent": config.top_percent,
                "failure_reward": config.failure_reward,
                "thresholds": {tasks.get(t, str(t)): eps for t, eps in sorted(result.thresholds.items())},
                "adv_col": config.adv_col,
                "use_ema": config.use_ema,
            },
        },
    )


@dataclasses.dataclass(frozen=True)
class RelabelResult:
    """What a run produced. On processes other than 0 (which write nothing) `report` is None and `result` and
    `values` cover nothing; `stats` are then this process's own."""

    output: pathlib.Path
    report: dict[str, Any] | None
    result: _adv.AdvantageResult | None
    values: np.ndarray | None
    stats: dict[str, Any]


def _score_own(
    config: RelabelConfig,
    ds: Any,
    cols: DatasetColumns,
    autonomous: np.ndarray,
    model: Model | None,
    procs: Processes,
) -> tuple[dict[str, Any], ValueCache, list[_decode.EpisodeWork], dict[str, Any], str, np.ndarray]:
    """This process's share before the first barrier: loads the model, scores its episodes into the cache and
    writes its stats file. Returns (stats, cache, every process's works, cache key, source fingerprint, needed)."""
    # Every process loads the model: Orbax's restore is itself collective, so it is not where one process fails alone.
    item_factory, values_fn, key = model if model is not None else load_model(config, ds)
    if os.environ.get(FAIL_PROCESS_ENV) == str(procs.index):  # as a bad frame would, after the model loaded
        raise errors.DatasetError(f"{FAIL_PROCESS_ENV} made process {procs.index} fail (a test).")
    # The source's content, not only its shape: a dataset re-exported at the same path with other frames must not
    # reuse the values cached for the old ones.
    source_fingerprint = provenance.dataset_fingerprint(ds.root)
    key = {**key, "dataset": _dataset_fingerprint(ds), "source": source_fingerprint, "human_col": config.human_col}
    needed = _adv.frames_needing_values(autonomous, cols.bounds, config.lookahead)
    works = episode_works(cols, needed)
    owner = assign_episodes([len(w.frames) for w in works], procs.count)
    # With several processes writing, only process 0 removes stale temp files, and only after the barrier.
    cache = ValueCache(config.resolved_cache_dir(), key, clean_stale=procs.count == 1)
    mine = [w for w, p in zip(works, owner, strict=True) if p == procs.index]
    scored = score_works(
        item_factory, values_fn, cols, mine, cache,
        batch_size=config.batch_size, num_workers=config.num_workers, prefetch=config.prefetch,
        progress=config.progress, processes=procs, run_total=len(needed),
    )  # fmt: skip
    own = {"process_index": procs.index, "local_devices": procs.local_devices, **scored}
    atomic.write_text(_stats_path(cache, procs.index), json.dumps(own, indent=2, sort_keys=True))
    return own, cache, works, key, source_fingerprint, needed


def relabel(config: RelabelConfig, *, model: Model | None = None, processes: Processes | None = None) -> RelabelResult:
    """Runs the whole pipeline on this process (every process of a multi-host run calls it with the same config).

    `model` (item factory, values fn, cache key) overrides loading the checkpoint; `processes` defaults to JAX's
    view (`jax.process_index()` / `jax.process_count()`). A process that fails before the values are complete
    makes every process raise one `ProcessError` naming it (no process waits for a peer that already failed).
    """
    from openpi.datasets import lerobot

    config.validate()
    src = pathlib.Path(config.data_dir).expanduser()
    if not src.exists():
        raise errors.DatasetError(f"Dataset {src} does not exist; pass --data_dir of a LeRobot dataset.")
    ds = lerobot.LeRobotDataset.open(src)
    target = config.target()
    if not config.in_place and target.exists() and not config.overwrite:
        raise errors.DatasetError(f"Output {target} already exists; pass --overwrite or choose another --output_dir.")
    atomic.check_output_dir(target)  # before inference, not after it (issue 29.7)
    cols = read_columns(ds, config.human_col)
    autonomous = cols.intervention == 0
    if not autonomous.any():
        raise errors.DatasetError(
            f"Dataset {ds.root} has no autonomous frames ({config.human_col} is 1 everywhere); there is nothing to "
            "relabel: human frames are always positive."
        )
    adv_cfg = config.advantage_config()
    procs = processes if processes is not None else Processes.current()
    # A process that fails before the first barrier (model load, a bad frame, a worker) leaves one sentence here
    # and still reaches the barrier; then every process raises it, instead of the others waiting out the timeout.
    error_root = config.resolved_cache_dir()
    error_root.mkdir(parents=True, exist_ok=True)
    _error_path(error_root, procs.index).unlink(missing_ok=True)  # a previous run's: all gone by the barrier
    try:
        own, cache, works, key, source_fingerprint, needed = _score_own(config, ds, cols, autonomous, model, procs)
    except Exception as exc:
        if procs.count == 1:
            raise
        logger.exception("Process %d failed before its values were complete", procs.index)
        atomic.write_text(_error_path(error_root, procs.index), _one_sentence(exc))
        procs.barrier("openpi_relabel_values")
        raise_process_errors(error_root, procs.count)
        raise  # unreachable unless the error file vanished
    procs.barrier("openpi_relabel_values")
    raise_process_errors(error_root, procs.count)
    if procs.index != 0:
        procs.barrier("openpi_relabel_written")
        return RelabelResult(output=target, report=None, result=None, values=None, stats=own)

    # Process 0 always reaches the last barrier, so the others never wait for a writer that failed.
    try:
        cache.remove_stale_temps()
        values = collect_values(cols, works, cache, f"all {procs.count} processes finished")
        per_process = [json.loads(_stats_path(cache, i).read_text()) for i in range(procs.count)]
        stats = {
            "frames_total": len(needed),
            "frames_cached": int(sum(p["frames_cached"] for p in per_process)),
            "frames_computed": int(sum(p["frames_computed"] for p in per_process)),
            # The run's rate: every process works at once.
            "frames_per_s": float(sum(p["frames_per_s"] for p in per_process)),
            "inference_s": float(max(p["inference_s"] for p in per_process)),
            "processes": procs.count,
            "devices": procs.devices,
            "per_process": per_process,
        }
        result = _adv.compute(
            reward=cols.reward,
            reward_label=cols.reward_label,
            intervention=cols.intervention,
            task_index=cols.task_index,
            values=values,
            bounds=cols.bounds,
            config=adv_cfg,
        )
        labels = np.asarray(result.adv_ind, dtype=object)
        spec = {"dtype": "string", "shape": [1], "names": None}
        if config.in_place:
            lerobot.copy_with_columns(ds, None, {config.adv_col: labels}, {config.adv_col: spec}, in_place=True)
        else:
            _remove_stale_staging(target)
            lerobot.copy_with_columns(
                ds, target, {config.adv_col: labels}, {config.adv_col: spec}, overwrite=config.overwrite
            )
        _write_provenance(config, ds, target, key, source_fingerprint, result)
        report = _report.write_report(
            config.resolved_report_dir(),
            result=result,
            values=values,
            task_index=cols.task_index,
            intervention=cols.intervention,
            bounds=cols.bounds,
            episode_ids=cols.episode_ids,
            task_names=dict(ds.tasks),
            config=adv_cfg,
            extra={
                "relabel_config": config.name,
                "source": str(ds.root),
                "output": str(target),
                "adv_col": config.adv_col,
                "inference": stats,
            },
        )
    finally:
        procs.barrier("openpi_relabel_written")
    return RelabelResult(output=target, report=report, result=result, values=values, stats=stats)


def _dataset_fingerprint(ds: Any) -> dict[str, Any]:
    return {
        "num_frames": int(ds.num_frames),
        "episodes": [[int(e.episode_index), int(e.from_index), int(e.to_index)] for e in ds.episodes],
        "features": sorted(ds.features),
    }


__all__ = [
    "ProcessError",
    "RelabelConfig",
    "RelabelResult",
    "ValueCache",
    "assign_episodes",
    "collect_values",
    "episode_works",
    "infer_values",
    "load_model",
    "read_columns",
    "relabel",
    "vocab",
]
