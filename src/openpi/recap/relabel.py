"""Relabelling pipeline (RECAP stage 5): value inference over a LeRobot dataset, N-step advantages, `adv_ind`.

Why it looks like this:
- Episodes come from the dataset's episode table, never from files: LeRobot v3.0 stores many episodes per file.
- Only the frames that matter are scored: autonomous frames and their t+N bootstrap frames.
- Frames are scored in one fixed global order, cut into fixed batches, so a batch always holds the same frames
  whether the run is fresh or resumed; with deterministic inference re-running gives byte-identical labels.
- Values are cached per episode (one .npz each, temp + rename) in a cache directory keyed by the checkpoint and the
  dataset, so a killed run resumes where it stopped.
- The source dataset is never touched unless `in_place`: by default a new dataset is written at `output_dir`
  (unchanged videos hard-linked), and `in_place` replaces files atomically.
- Decoding is overlapped with inference by the shared `training.data_loader.DataLoader` (workers + prefetch).
"""

from collections.abc import Callable
import dataclasses
import hashlib
import json
import pathlib
import sys
import time
from typing import Any
import zipfile

import numpy as np

from openpi.recap import advantage as _adv
from openpi.recap import provenance
from openpi.recap import report as _report
from openpi.shared import atomic
from openpi.shared import errors

# batch of value-model inputs -> values [B]
ValuesFn = Callable[[dict[str, Any]], Any]

CACHE_VERSION = 2  # 2: the key holds the source dataset's content fingerprint


@dataclasses.dataclass(frozen=True)
class RelabelConfig:
    """Everything one relabelling run needs (the CLI in scripts/label_advantage_from_vlm.py fills it)."""

    data_dir: str
    """The LeRobot dataset (v2.1 or v3.0) to relabel."""
    checkpoint_dir: str
    """A value run of scripts/train_value.py (its latest step) or one of its step folders."""
    output_dir: str | None = None
    """Where the relabelled copy is written (the source is never modified)."""
    in_place: bool = False
    """Rewrite the source dataset instead (files replaced atomically: temp + fsync + rename)."""
    overwrite: bool = False
    """Replace an existing --output_dir."""
    tokenizer_path: str | None = None
    """The Gemma3 SentencePiece model the value model was trained with (its sha256 is checked)."""
    batch_size: int = 32
    """Frames per inference batch."""
    lookahead: int = 50
    """N of the N-step advantage."""
    top_percent: float = 30.0
    """Percent of each task's autonomous frames labelled positive."""
    failure_reward: float = _adv.DEFAULT_FAILURE_REWARD
    """Terminal reward of a failed episode whose stored one carries no penalty (community data writes 0)."""
    human_col: str = "intervention"
    """Column that is 1 on human frames (corrections, demonstrations) and 0 on autonomous frames."""
    adv_col: str = "adv_ind"
    """Column the labels are written to."""
    use_ema: bool = True
    """Use the EMA weights (else the raw trained weights)."""
    step: int | None = None
    """Checkpoint step (default: the latest)."""
    cameras: tuple[str, ...] | None = None
    """Dataset camera columns to feed the model; default the checkpoint's. Different cameras are refused."""
    num_workers: int = 2
    """Decoding threads that run ahead of inference."""
    cache_dir: str | None = None
    """Per-episode value cache (default <output>.relabel_cache); a killed run resumes from it."""
    report_dir: str | None = None
    """Report JSON + PNGs (default <output>.relabel_report)."""
    progress: bool = True
    """Show a progress bar with frames/s and ETA."""

    def __post_init__(self):
        if self.in_place and self.output_dir is not None:
            raise errors.ConfigError("Pass either --output_dir (write a new dataset) or --in_place, not both.")
        if not self.in_place and self.output_dir is None:
            raise errors.ConfigError(
                "Pass --output_dir for the relabelled copy (the source is left untouched), or --in_place to "
                "rewrite the source dataset."
            )
        if self.batch_size < 1:
            raise errors.ConfigError(f"--batch_size must be >= 1, got {self.batch_size}.")
        try:
            self.advantage_config()
        except ValueError as e:
            raise errors.ConfigError(str(e)) from e

    def advantage_config(self) -> _adv.AdvantageConfig:
        return _adv.AdvantageConfig(
            lookahead=self.lookahead, top_percent=self.top_percent, failure_reward=self.failure_reward
        )

    def target(self) -> pathlib.Path:
        return pathlib.Path(self.data_dir if self.in_place else self.output_dir).expanduser().absolute()

    def resolved_cache_dir(self) -> pathlib.Path:
        if self.cache_dir:
            return pathlib.Path(self.cache_dir).expanduser().absolute()
        t = self.target()
        return t.parent / f"{t.name}.relabel_cache"

    def resolved_report_dir(self) -> pathlib.Path:
        if self.report_dir:
            return pathlib.Path(self.report_dir).expanduser().absolute()
        t = self.target()
        return t.parent / f"{t.name}.relabel_report"


@dataclasses.dataclass(frozen=True)
class DatasetColumns:
    """The per-frame columns the advantage needs, flat over the dataset, plus episode bounds."""

    reward: np.ndarray
    reward_label: np.ndarray
    intervention: np.ndarray
    task_index: np.ndarray
    bounds: list[tuple[int, int]]
    episode_ids: list[int]


def read_columns(ds: Any, human_col: str = "intervention") -> DatasetColumns:
    """Reads and checks reward / reward_label / the human column / task_index; one clear error per problem."""
    for name, hint in (
        ("reward", "the sparse success reward (1 on the last frame of a success)"),
        ("reward_label", "the dense per-step reward"),
        (human_col, "1 on human frames, 0 on autonomous ones; set --human_col if it has another name"),
        ("task_index", "the task of each frame"),
    ):
        if not ds.has_column(name):
            raise errors.DatasetError(
                f"Dataset {ds.root} has no {name!r} column ({hint}); add the RECAP columns first "
                "(scripts/add_recap_columns.py)."
            )
    num = ds.num_frames
    cols = {
        "reward": np.asarray(ds.column("reward"), np.float32).reshape(num, -1)[:, 0],
        "reward_label": np.asarray(ds.column("reward_label"), np.float32).reshape(num, -1)[:, 0],
        "intervention": np.asarray(ds.column(human_col)).reshape(num, -1)[:, 0].astype(np.int64),
        "task_index": np.asarray(ds.column("task_index")).reshape(num, -1)[:, 0].astype(np.int64),
    }
    for name in ("reward", "reward_label"):
        bad = np.flatnonzero(~np.isfinite(cols[name]))
        if bad.size:
            raise errors.DatasetError(f"Column {name!r} of {ds.root} is not finite at frame {int(bad[0])}; fix it.")
    bounds = [(int(ep.from_index), int(ep.to_index)) for ep in ds.episodes]
    episode_ids = [int(ep.episode_index) for ep in ds.episodes]
    return DatasetColumns(bounds=bounds, episode_ids=episode_ids, **cols)


def fixed_batches(frames: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """The global frame order cut into batches; the same frames always land in the same batch."""
    return [frames[i : i + batch_size] for i in range(0, len(frames), batch_size)]


def _atomic_save_npz(path: pathlib.Path, **arrays: np.ndarray) -> None:
    with atomic.atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


class ValueCache:
    """Per-episode value files under `<cache_dir>/<key>/`, where key hashes the checkpoint and the dataset."""

    def __init__(self, root: pathlib.Path, key: dict[str, Any]):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = root / digest
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(".*.tmp"):  # temp files of a run killed mid-write (SIGKILL cannot clean up)
            stale.unlink(missing_ok=True)
        meta = self.dir / "key.json"
        if not meta.exists():
            atomic.write_text(meta, json.dumps(key, indent=2, sort_keys=True))

    def path(self, episode_id: int) -> pathlib.Path:
        return self.dir / f"episode_{episode_id:06d}.npz"

    def load(self, episode_id: int, frames: np.ndarray) -> np.ndarray | None:
        """Cached values of `frames` (global indices) or None when absent or made for other frames."""
        path = self.path(episode_id)
        if not path.exists():
            return None
        try:
            with np.load(path) as z:
                if np.array_equal(z["frames"], frames):
                    return z["values"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            return None  # unreadable (truncated by another tool, disk full): recompute it
        return None

    def save(self, episode_id: int, frames: np.ndarray, values: np.ndarray) -> None:
        _atomic_save_npz(self.path(episode_id), frames=frames, values=values.astype(np.float32))


class _Progress:
    """A one-line progress bar with frames/s and ETA on stderr (no dependency, works in logs too)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = total, 0, enabled and total > 0
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.5 and self.done < self.total):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        width = 30
        fill = int(width * self.done / self.total)
        sys.stderr.write(
            f"\rvalues [{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} frames "
            f"{rate:.1f} frames/s ETA {eta:.0f}s"
        )
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    @property
    def frames_per_s(self) -> float:
        return self.done / max(time.monotonic() - self.start, 1e-9)


def infer_values(
    item_factory: Callable[[], Callable[[int, int], dict[str, Any]]],
    values_fn: ValuesFn,
    cols: DatasetColumns,
    needed: np.ndarray,
    cache: ValueCache,
    *,
    batch_size: int,
    num_workers: int = 2,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, float]]:
    """Values at `needed` frames (NaN elsewhere), resuming from and filling the per-episode cache."""
    from openpi.training import data_loader as _data_loader

    num = len(cols.reward)
    values = np.full(num, np.nan, np.float32)
    episode_of = np.zeros(num, np.int64)
    for e, (start, stop) in enumerate(cols.bounds):
        episode_of[start:stop] = e
    needed_by_ep = {e: needed[episode_of[needed] == e] for e in np.unique(episode_of[needed]).tolist()}
    done_eps = set()
    for e, frames in needed_by_ep.items():
        cached = cache.load(cols.episode_ids[e], frames)
        if cached is not None:
            values[frames] = cached
            done_eps.add(e)
    batches = fixed_batches(needed, batch_size)
    todo = [b for b in batches if any(int(e) not in done_eps for e in np.unique(episode_of[b]))]
    stats = {"frames_total": len(needed), "frames_cached": int(sum(len(needed_by_ep[e]) for e in done_eps))}
    if not todo:
        stats.update(frames_computed=0, frames_per_s=0.0)
        return values, stats
    # Pad the last short batch with its own last frame, so every batch has one shape (one compilation).
    flat = np.concatenate([np.concatenate([b, np.full(batch_size - len(b), b[-1])]) for b in todo])
    sampler = _data_loader.BatchSampler(flat, batch_size, shuffle=False)
    loader = _data_loader.DataLoader(item_factory, sampler, num_workers=num_workers, num_batches=len(todo))
    remaining = {e: len(f) for e, f in needed_by_ep.items() if e not in done_eps}
    filled = {e: 0 for e in remaining}
    bar = _Progress(sum(len(b) for b in todo), progress)
    for frames, batch in zip(todo, loader, strict=True):
        out = np.asarray(values_fn(batch), np.float32).reshape(-1)[: len(frames)]
        for e in np.unique(episode_of[frames]).tolist():
            if e in done_eps:
                continue
            sel = episode_of[frames] == e
            values[frames[sel]] = out[sel]
            filled[e] += int(sel.sum())
            if filled[e] == remaining[e]:
                cache.save(cols.episode_ids[e], needed_by_ep[e], values[needed_by_ep[e]])
                done_eps.add(e)
        bar.update(len(frames))
    stats.update(frames_computed=bar.done, frames_per_s=bar.frames_per_s)
    return values, stats


def _checkpoint_fingerprint(path: pathlib.Path) -> list[Any]:
    """Names, sizes and mtimes of the checkpoint's files: a new or retrained checkpoint gets a new cache."""
    out = []
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        st = p.stat()
        out.append([p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns])
    return out


def _dataset_fingerprint(ds: Any) -> dict[str, Any]:
    return {
        "num_frames": int(ds.num_frames),
        "episodes": [[int(e.episode_index), int(e.from_index), int(e.to_index)] for e in ds.episodes],
        "features": sorted(ds.features),
    }


def make_values_fn(model: Any, params: Any, *, fsdp_devices: int = 1) -> ValuesFn:
    """batch -> values [B], with the value model's params put on the device(s) once, here.

    Passing the host (numpy) params into the jitted function instead would copy the whole model host->device on
    every batch (~1.4 GB per call at full size). The params are laid out like training (`sharding.fsdp_sharding`
    over a `make_mesh(fsdp_devices)` mesh: replicated with the default 1, large arrays split over `fsdp_devices`),
    and each batch is put on the devices explicitly, split over the batch axis when it divides evenly.
    """
    import jax

    from openpi.training import sharding as _sharding
    from openpi.training import value_checkpoint

    mesh = _sharding.make_mesh(fsdp_devices)
    device_params = jax.device_put(params, _sharding.fsdp_sharding(params, mesh))
    batch_split = _sharding.data_sharding(mesh)
    whole = _sharding.replicated(mesh)
    num_devices = mesh.devices.size

    def values_fn(batch: dict[str, Any]) -> np.ndarray:
        size = len(next(iter(jax.tree.leaves(batch))))
        batch = jax.device_put(batch, batch_split if size % num_devices == 0 else whole)
        return np.asarray(value_checkpoint.predict_values(model, device_params, batch))

    return values_fn


def load_model(config: RelabelConfig, ds: Any) -> tuple[Callable[[], Any], ValuesFn, dict[str, Any]]:
    """(item factory, values fn, cache key) from the value checkpoint; enforces the checkpoint's cameras."""
    from openpi.training import value_checkpoint

    ckpt = pathlib.Path(config.checkpoint_dir).expanduser()
    if not ckpt.exists():
        raise errors.CheckpointError(
            f"Value checkpoint {ckpt} does not exist; pass the --checkpoint_dir written by scripts/train_value.py."
        )
    model, params = value_checkpoint.load_value_checkpoint(ckpt, use_ema=config.use_ema, step=config.step)
    run_dir, step_dir = value_checkpoint._locate(ckpt, config.step)
    inputs = value_checkpoint.load_value_inputs(ckpt, step=config.step)
    trained = [col for _, col in inputs.data.cameras]
    if config.cameras is not None and list(config.cameras) != trained:
        raise errors.ConfigError(
            f"--cameras {list(config.cameras)} differ from the cameras the value checkpoint {ckpt} was trained on "
            f"({trained}); label with the same cameras (drop --cameras) or retrain the value model."
        )
    missing = [c for c in trained if c not in ds.features]
    if missing:
        raise errors.DatasetError(
            f"Dataset {ds.root} lacks cameras {missing} that the value checkpoint {ckpt} was trained on "
            f"(it has {ds.camera_keys}); relabel a dataset recorded with those cameras."
        )
    if not ds.has_column(inputs.data.state_key):
        raise errors.DatasetError(f"Dataset {ds.root} has no state column {inputs.data.state_key!r}.")
    # The training item pipeline itself (reader, transforms, tokenizer), without the value target.
    factory = inputs.item_factory(model, repo_id=str(ds.root), tokenizer_path=config.tokenizer_path)
    factory()  # fail early (tokenizer, cameras) before any batch is submitted to the workers

    values_fn = make_values_fn(model, params)
    key = {
        "version": CACHE_VERSION,
        "checkpoint": str(ckpt.resolve()),
        "checkpoint_files": _checkpoint_fingerprint(ckpt.resolve()),
        "value_checkpoint": provenance.value_checkpoint_fingerprint(run_dir, step_dir),
        "use_ema": config.use_ema,
        "step": config.step,
        "tokenizer": inputs.tokenizer,
        "batch_size": config.batch_size,
    }
    return factory, values_fn, key


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
    provenance.write(
        target,
        {
            "label_scale": scale,
            "relabel": {
                "value_checkpoint": key.get("value_checkpoint"),
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
    output: pathlib.Path
    report: dict[str, Any]
    result: _adv.AdvantageResult
    values: np.ndarray
    stats: dict[str, float]


def relabel(
    config: RelabelConfig,
    *,
    model: tuple[Callable[[], Any], ValuesFn, dict[str, Any]] | None = None,
) -> RelabelResult:
    """Runs the whole pipeline; `model` (item factory, values fn, cache key) overrides loading the checkpoint."""
    from openpi.datasets import lerobot

    src = pathlib.Path(config.data_dir).expanduser()
    if not src.exists():
        raise errors.DatasetError(f"Dataset {src} does not exist; pass --data_dir of a LeRobot dataset.")
    ds = lerobot.LeRobotDataset.open(src)
    target = config.target()
    if not config.in_place and target.exists() and not config.overwrite:
        raise errors.DatasetError(f"Output {target} already exists; pass --overwrite or choose another --output_dir.")
    cols = read_columns(ds, config.human_col)
    autonomous = cols.intervention == 0
    if not autonomous.any():
        raise errors.DatasetError(
            f"Dataset {ds.root} has no autonomous frames ({config.human_col} is 1 everywhere); there is nothing to "
            "relabel: human frames are always positive."
        )
    adv_cfg = config.advantage_config()
    item_factory, values_fn, key = model if model is not None else load_model(config, ds)
    # The source's content, not only its shape: a dataset re-exported at the same path with other frames must not
    # reuse the values cached for the old ones.
    source_fingerprint = provenance.dataset_fingerprint(ds.root)
    key = {**key, "dataset": _dataset_fingerprint(ds), "source": source_fingerprint, "human_col": config.human_col}
    needed = _adv.frames_needing_values(autonomous, cols.bounds, adv_cfg.lookahead)
    cache = ValueCache(config.resolved_cache_dir(), key)
    t0 = time.monotonic()
    values, stats = infer_values(
        item_factory,
        values_fn,
        cols,
        needed,
        cache,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        progress=config.progress,
    )
    stats["inference_s"] = time.monotonic() - t0
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
        extra={"source": str(ds.root), "output": str(target), "adv_col": config.adv_col, "inference": stats},
    )
    return RelabelResult(output=target, report=report, result=result, values=values, stats=stats)
