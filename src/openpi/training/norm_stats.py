"""Norm stats (`norm_stats.json`: state and actions) for a policy config, a value config, or a LeRobot dataset.

The one place where norm stats are computed, for every model: `scripts/compute_norm_stats.py <name>` writes
them to `<assets_base_dir>/<config name>/<asset_id>/norm_stats.json`, where the trainers read them
(`config.AssetsConfig.load_norm_stats`, shared by `TrainConfig` and `ValueTrainConfig`); training never computes
them itself, so a run and the stats it normalised with can always be inspected and reused.

openpi computes these statistics by running every frame through its data pipeline, images included, which
is what makes its norm-stats runs take hours on large datasets. State and actions are plain parquet
columns, so here they are read once as whole columns and reduced with vectorised numpy: no video is ever
decoded. What the pipeline would have changed is reproduced on the columns: actions are taken in chunks of
the config's action horizon (the last frame of an episode repeating past its end, as LeRobot pads), and
made relative to the state on the delta-action dims, exactly as the `DeltaActions` transform does. A value
config reads only the state, over its training episodes (the held-out validation episodes stay unseen).

For a dataset root (no config) the output goes to `<assets_base_dir>/<asset_id>/` (default
`./assets/<asset_id>/`), the trainer's shared fallback that configs over the same frames read. `--output-dir`
overrides both. The file is written atomically.
"""

import dataclasses
import difflib
import logging
import pathlib
import time
from typing import Any

import numpy as np
import tyro

from openpi.datasets import lerobot
from openpi.shared import atomic
from openpi.shared import cli
from openpi.shared import errors
from openpi.shared import normalize
from openpi.training import config as _config

logger = logging.getLogger("openpi.norm_stats")

PROG = "compute_norm_stats.py"
USAGE = """Compute `norm_stats.json` (state and actions) for a training config, a value config or a LeRobot dataset.

    uv run scripts/compute_norm_stats.py pi06_yam_vial_30fps           # a registered TrainConfig
    uv run scripts/compute_norm_stats.py value_demo --repo-id=<dataset> # a ValueTrainConfig: state stats
    uv run scripts/compute_norm_stats.py /data/my_yam_dataset           # a dataset root (or <org>/<name>)
    uv run scripts/compute_norm_stats.py /data/ds --output-dir /tmp/stats --action-horizon 50 \\
        --delta-action-mask 6 -1 6 -1

For a config the output goes to `<assets_base_dir>/<config name>/<asset_id>/norm_stats.json`, the place its
trainer reads first; for a dataset root to `<assets_base_dir>/<asset_id>/`. Only parquet columns are read (no
video is decoded)."""

DEFAULT_STATE_KEY = "observation.state"
DEFAULT_ACTION_KEY = "action"
_BLOCK_ROWS = 1 << 16


@dataclasses.dataclass(frozen=True)
class Args:
    target: tyro.conf.Positional[str]
    """A TrainConfig or ValueTrainConfig name, a dataset root, or a `<org>/<name>` repo id under $HF_LEROBOT_HOME."""
    output_dir: pathlib.Path | None = None
    """Where to write norm_stats.json; default `<assets_base_dir>/<config name>/<asset_id>` for a config (where
    the trainer reads first), `<assets_base_dir>/<asset_id>` for a dataset."""
    assets_base_dir: pathlib.Path | None = None
    """Default: the config's `assets_base_dir`, else `./assets`."""
    asset_id: str | None = None
    """Default: the config's asset id, else the dataset's folder name."""
    state_key: str | None = None
    """Parquet column of the state; default the config's, else `observation.state`."""
    action_key: str | None = None
    """Parquet column of the actions; default the config's, else `action`."""
    action_horizon: int | None = None
    """Actions are counted over chunks of this many future frames; default the config's model horizon, else 1."""
    delta_action_mask: tuple[int, ...] | None = None
    """`make_bool_mask` dims (e.g. `6 -1 6 -1`): positive runs are made relative to the state; default the config's."""
    num_bins: int = normalize.NUM_QUANTILE_BINS
    """Histogram bins per dimension for q01/q99."""
    repo_id: str | None = None
    """With a config name: read this dataset (root or repo id) instead of the config's `data.repo_id`."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything resolved from the CLI and (optionally) a TrainConfig: what to read and where to write."""

    dataset: str
    output_dir: pathlib.Path
    state_key: str
    action_key: str
    action_horizon: int
    delta_mask: tuple[bool, ...] | None
    # A value config's data: state only, over its training episodes (None: state and actions, every frame).
    value_data: Any = None


def bool_mask(dims: tuple[int, ...]) -> tuple[bool, ...]:
    """openpi's `make_bool_mask`: ``(6, -1)`` -> six True then one False."""
    out: list[bool] = []
    for d in dims:
        out.extend([d > 0] * abs(d))
    return tuple(out)


def episode_ends(ds: Any) -> np.ndarray:
    """Exclusive end position of each frame's episode, ``[N]``, from the dataset's episode table."""
    ends = np.empty(ds.num_frames, dtype=np.int64)
    for ep in ds.episodes:
        ends[ep.from_index : ep.to_index] = ep.to_index
    return ends


def _float_column(ds: Any, key: str) -> np.ndarray:
    values = np.asarray(ds.column(key))
    if values.dtype.kind not in "fiub":
        raise errors.DatasetError(
            f"Column {key!r} of {ds.root} has dtype {values.dtype}; norm stats need a numeric vector column, pass "
            "--state-key/--action-key naming one."
        )
    values = values.reshape(len(values), -1)
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            i, dim = np.argwhere(bad)[0]
            episode = ds.episode_for_frame(int(i))
            raise errors.DatasetError(
                f"Column {key!r} of {ds.root} holds {values[i, dim]} at episode {episode.episode_index}, frame "
                f"{int(i) - episode.from_index}, dim {dim}; fix or drop that episode before computing norm stats."
            )
    return values


def _full_mask(delta_mask: tuple[bool, ...] | None, action_dim: int, state_dim: int) -> np.ndarray | None:
    """The delta mask padded with False to the action dim; None when no dim is delta."""
    if delta_mask is None or not any(delta_mask):
        return None
    dims = len(delta_mask)
    if dims > action_dim or dims > state_dim:
        raise errors.ConfigError(
            f"The delta-action mask covers {dims} dims but actions have {action_dim} and state {state_dim}; "
            "shorten the mask to the robot's action dim."
        )
    mask = np.zeros(action_dim, dtype=bool)
    mask[:dims] = delta_mask
    return mask


def window_extrema(values: np.ndarray, ends: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame t, min and max of ``values[t : min(t + horizon, ends[t])]`` (its action chunk's range).

    Doubling: after step p, ``lo[t]`` covers ``[t, t + p)`` clipped to the episode; two overlapping windows of
    the largest power of two <= horizon then cover the chunk exactly. O(N log H) instead of O(N H).
    """
    positions = np.arange(len(values), dtype=np.int64)
    last = ends - 1
    lo = np.array(values, dtype=np.float64)  # fresh arrays: callers may modify the results in place
    hi = lo.copy()
    p = 1
    while 2 * p <= horizon:
        shifted = np.minimum(positions + p, last)
        lo, hi = np.minimum(lo, lo[shifted]), np.maximum(hi, hi[shifted])
        p *= 2
    if p < horizon:
        shifted = np.minimum(positions + horizon - p, last)
        lo, hi = np.minimum(lo, lo[shifted]), np.maximum(hi, hi[shifted])
    return lo, hi


def _action_chunks(
    actions: np.ndarray, state: np.ndarray, ends: np.ndarray, horizon: int, delta_mask: tuple[bool, ...] | None
):
    """Yields float64 ``[B, D]`` blocks that together hold every frame's action chunk (delta where masked).

    Row blocks outside, chunk offsets inside: each block's gather and subtraction stay cache-sized.
    """
    mask = _full_mask(delta_mask, actions.shape[1], state.shape[1])
    actions = np.asarray(actions, dtype=np.float64)
    for start in range(0, len(actions), _BLOCK_ROWS):
        positions = np.arange(start, min(start + _BLOCK_ROWS, len(actions)), dtype=np.int64)
        last = ends[positions] - 1
        offset = None
        if mask is not None:
            # Full-width offsets (zero on absolute dims) so each chunk is one in-place subtraction.
            offset = np.zeros((len(positions), actions.shape[1]))
            offset[:, mask] = state[positions][:, np.flatnonzero(mask)]
        for k in range(horizon):
            chunk = actions.take(np.minimum(positions + k, last), axis=0)
            if offset is not None:
                chunk -= offset
            yield chunk


def compute_norm_stats(
    ds: Any,
    *,
    state_key: str = DEFAULT_STATE_KEY,
    action_key: str = DEFAULT_ACTION_KEY,
    action_horizon: int = 1,
    delta_mask: tuple[bool, ...] | None = None,
    num_bins: int = normalize.NUM_QUANTILE_BINS,
) -> dict[str, normalize.NormStats]:
    """``{"state": ..., "actions": ...}`` from the dataset's parquet columns (never its videos).

    ``ds`` is an open `lerobot.LeRobotDataset`. With ``action_horizon = H`` every frame contributes the H
    actions of its chunk (openpi's weighting: frames near an episode's end repeat its last action).
    """
    if action_horizon < 1:
        raise errors.ConfigError(f"action_horizon must be >= 1, got {action_horizon}.")
    for key in (state_key, action_key):
        if not ds.has_column(key):
            raise errors.DatasetError(
                f"Dataset {ds.root} has no column {key!r}; pass --state-key/--action-key naming its state and "
                "action columns."
            )
    state = _float_column(ds, state_key)
    actions = _float_column(ds, action_key)
    if len(state) < 2:
        raise errors.DatasetError(f"Dataset {ds.root} has {len(state)} frames; norm stats need at least 2.")

    out = {"state": normalize.compute(state, num_bins)}
    ends = episode_ends(ds)
    if action_horizon == 1 and not (delta_mask and any(delta_mask)):
        out["actions"] = normalize.compute(actions, num_bins)
        return out
    # The exact range of all chunk values first (sliding-window extrema), so the histogram never re-bins.
    mask = _full_mask(delta_mask, actions.shape[1], state.shape[1])
    wmin, wmax = window_extrema(actions, ends, action_horizon)
    if mask is not None:
        offset = np.zeros_like(wmin)
        offset[:, mask] = state[:, np.flatnonzero(mask)]
        wmin, wmax = wmin - offset, wmax - offset
    lo, hi = wmin.min(axis=0), wmax.max(axis=0)
    running = normalize.RunningStats(num_bins, value_range=(lo, hi))
    for chunk in _action_chunks(actions, state, ends, action_horizon, delta_mask):
        running.update(chunk)
    out["actions"] = running.get_statistics()
    return out


def check_fits_dataset(
    stats: dict[str, normalize.NormStats], ds: Any, columns: dict[str, str], *, source: str | None = None
) -> None:
    """Refuses stats whose width does not fit the parquet columns they are computed from (`columns`: stats key ->
    column, as `compute_norm_stats` reads them), before anything compiles; `normalize.check_width` holds the rule.

    Reusing another dataset's asset id (one stats file for several configs) makes narrower stats easy to hit.
    """
    for key, column in columns.items():
        feature = ds.features.get(column)
        if key in stats and feature is not None:
            normalize.check_width(key, stats[key], int((feature.get("shape") or [1])[-1]), source=source)


def stats_file(dirs: list[pathlib.Path]) -> str | None:
    """The norm_stats.json the trainers load from `dirs` (the first that exists), for messages."""
    found = [d / normalize.NORM_STATS_FILENAME for d in dirs if (d / normalize.NORM_STATS_FILENAME).is_file()]
    return str(found[0]) if found else None


def plan_for_config(cfg: Any, args: Args) -> Plan:
    """The plan for a `TrainConfig` or a `ValueTrainConfig` object (registered or built in code)."""
    from openpi.training import value_config as _value_config

    data = cfg.data
    repo_id = args.repo_id or getattr(data, "repo_id", None)
    if not repo_id:
        raise errors.ConfigError(f"Config {cfg.name!r} reads no LeRobot dataset (data.repo_id); norm stats need one.")
    if args.repo_id:
        data = dataclasses.replace(data, repo_id=args.repo_id)
    asset_id = args.asset_id or data.resolved_asset_id() or pathlib.Path(str(repo_id)).name
    base = args.assets_base_dir or pathlib.Path(cfg.assets_base_dir)
    output_dir = args.output_dir or base / cfg.name / str(asset_id)
    if isinstance(cfg, _value_config.ValueTrainConfig):
        state_key = args.state_key or data.state_key
        return Plan(str(repo_id), output_dir, state_key, state_key, 1, None, value_data=data)
    if args.delta_action_mask is not None:
        mask = bool_mask(args.delta_action_mask)
    else:
        mask = data.delta_action_mask
    return Plan(
        dataset=str(repo_id),
        output_dir=output_dir,
        state_key=args.state_key or data.state_key,
        action_key=args.action_key or data.action_key,
        action_horizon=int(args.action_horizon or cfg.model.action_horizon),
        delta_mask=tuple(bool(m) for m in mask) if mask is not None else None,
    )


def config_names() -> list[str]:
    """The names `scripts/compute_norm_stats.py` accepts besides dataset paths: policy and value configs."""
    return list(_config_names())


def _config_names() -> dict[str, Any]:
    """Every registered config name -> its getter (policy and value configs share one name space here)."""
    from openpi.training import value_config as _value_config

    names: dict[str, Any] = dict.fromkeys(_config.config_names(), _config.get_config)
    names.update(dict.fromkeys(_value_config.config_names(), _value_config.get_config))
    return names


def make_plan(args: Args) -> Plan:
    """A dataset path (or `<org>/<name>` that exists) wins; otherwise the target must be a config name."""
    target = args.target
    is_path = pathlib.Path(target).expanduser().exists()
    is_repo = not is_path and "/" in target and (lerobot.lerobot_home() / target).exists()
    names = None if (is_path or is_repo) else _config_names()
    if names is not None and target in names:
        return plan_for_config(names[target](target), args)
    if not (is_path or is_repo):
        hint = ""
        if names:
            close = difflib.get_close_matches(target, list(names), n=3)
            hint = f" Closest config names: {', '.join(close)}." if close else ""
        raise errors.ConfigError(
            f"{target!r} is neither a dataset on disk (a path, or <org>/<name> under {lerobot.lerobot_home()}) nor "
            f"a registered training or value config; pass one of those.{hint}"
        )
    asset_id = args.asset_id or pathlib.Path(target).expanduser().resolve().name
    return Plan(
        dataset=target,
        output_dir=args.output_dir or (args.assets_base_dir or pathlib.Path("./assets")) / asset_id,
        state_key=args.state_key or DEFAULT_STATE_KEY,
        action_key=args.action_key or DEFAULT_ACTION_KEY,
        action_horizon=args.action_horizon or 1,
        delta_mask=bool_mask(args.delta_action_mask) if args.delta_action_mask else None,
    )


def run(args: Args) -> pathlib.Path:
    """Computes and writes the stats; returns the path of norm_stats.json."""
    return write(make_plan(args), num_bins=args.num_bins)


def write_for_config(cfg: Any, **overrides: Any) -> pathlib.Path:
    """Norm stats for a config object (e.g. one changed in code), written where its trainer reads them."""
    args = Args(target=cfg.name, **overrides)
    return write(plan_for_config(cfg, args), num_bins=args.num_bins)


def write(plan: Plan, *, num_bins: int = normalize.NUM_QUANTILE_BINS) -> pathlib.Path:
    """Computes the stats of a plan and writes them atomically; returns the path of norm_stats.json."""
    atomic.check_output_dir(plan.output_dir)  # before the stats are computed
    start = time.perf_counter()
    ds = lerobot.LeRobotDataset.open(plan.dataset)
    if plan.value_data is not None:
        from openpi.training import value_data

        stats = value_data.state_norm_stats(ds, plan.value_data)
    else:
        stats = compute_norm_stats(
            ds,
            state_key=plan.state_key,
            action_key=plan.action_key,
            action_horizon=plan.action_horizon,
            delta_mask=plan.delta_mask,
            num_bins=num_bins,
        )
    path = normalize.save(plan.output_dir, stats)
    logger.info("Wrote %s from %d frames of %s in %.2f s.", path, ds.num_frames, ds.root, time.perf_counter() - start)
    return path


def main(args: list[str]) -> pathlib.Path:
    """`scripts/compute_norm_stats.py`'s body: `<config name or dataset> [--flags]`; prints the written path.

    `--help` first prints the usage and every policy and value config name (exit 0; no arguments: to stderr, exit
    2); a flag before the target is refused. The target may also be a dataset, so an unknown name is reported by `make_plan`
    (with the nearest config names) rather than by the registry lookup.
    """
    args = list(args)
    if not args or args[0].startswith("-"):
        cli.split_name(_config_names(), args, kind="config", prog=PROG, description=USAGE)  # exits 0 or 2, or raises
    path = run(cli.parse(Args, args, prog=PROG, description=USAGE))
    print(path)
    return path
