"""A report of one relabelling run: per-task counts, thresholds, positive fractions, value/advantage summaries.

The numbers go to `report.json` and a console table; the pictures users check before training on the labels go to
PNGs: an advantage histogram per task with its threshold line, and the predicted value along a few episodes with the
positive/negative frames shaded. Everything is written atomically into one report directory beside the output dataset.
"""

from collections.abc import Mapping
from collections.abc import Sequence
import json
import os
import pathlib
from typing import Any

import numpy as np

from openpi.recap import advantage as _adv
from openpi.shared import atomic

REPORT_JSON = "report.json"


def _stats(x: np.ndarray) -> dict[str, float] | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return None
    q = np.percentile(x, [10, 50, 90])
    return {
        "mean": float(x.mean()),
        "std": float(x.std()),
        "min": float(x.min()),
        "p10": float(q[0]),
        "p50": float(q[1]),
        "p90": float(q[2]),
        "max": float(x.max()),
    }


def summarize(
    *,
    result: _adv.AdvantageResult,
    values: np.ndarray,
    task_index: np.ndarray,
    intervention: np.ndarray,
    bounds: Sequence[tuple[int, int]],
    task_names: Mapping[int, str],
    config: _adv.AdvantageConfig,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-ready report. Per-frame arrays are flat over the dataset; `bounds` are episode [start, stop) ranges."""
    task_index = np.asarray(task_index).reshape(-1)
    autonomous = np.asarray(intervention).reshape(-1) == 0
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    positive = result.adv_ind == _adv.POSITIVE
    episode_task = np.array([task_index[start] if stop > start else -1 for start, stop in bounds])
    tasks = []
    for task in sorted(int(t) for t in np.unique(task_index)):
        in_task = task_index == task
        auto = in_task & autonomous
        ep_mask = episode_task == task
        n_auto = int(auto.sum())
        tasks.append(
            {
                "task_index": task,
                "task": task_names.get(task, f"task {task}"),
                "episodes": int(ep_mask.sum()),
                "successful_episodes": int((result.success & ep_mask).sum()),
                "frames": int(in_task.sum()),
                "autonomous_frames": n_auto,
                "human_frames": int((in_task & ~autonomous).sum()),
                "threshold": result.thresholds.get(task),
                "positive_autonomous": int((positive & auto).sum()),
                "positive_fraction_autonomous": float((positive & auto).sum() / n_auto) if n_auto else None,
                "positive_fraction_all": float((positive & in_task).sum() / in_task.sum()),
                "advantage": _stats(result.advantage[auto]),
                "value": _stats(values[auto]),
            }
        )
    n_auto = int(autonomous.sum())
    report: dict[str, Any] = {
        "config": {
            "lookahead": config.lookahead,
            "top_percent": config.top_percent,
            "failure_reward": config.failure_reward,
        },
        "totals": {
            "episodes": len(bounds),
            "successful_episodes": int(result.success.sum()),
            "frames": int(task_index.size),
            "autonomous_frames": n_auto,
            "human_frames": int(task_index.size - n_auto),
            "positive_frames": int(positive.sum()),
            "positive_fraction_autonomous": float((positive & autonomous).sum() / n_auto) if n_auto else None,
        },
        "tasks": tasks,
    }
    if extra:
        report.update(extra)
    return report


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def format_table(report: Mapping[str, Any]) -> str:
    """A fixed-width console table, one row per task plus a total line."""
    header = (
        f"{'task':<32} {'eps':>5} {'auto':>7} {'human':>6} {'thresh':>8} {'pos%auto':>8} {'adv p50':>8} {'V mean':>7}"
    )
    lines = [header, "-" * len(header)]
    for t in report["tasks"]:
        name = t["task"] if len(t["task"]) <= 32 else t["task"][:29] + "..."
        frac = t["positive_fraction_autonomous"]
        lines.append(
            f"{name:<32} {t['episodes']:>5} {t['autonomous_frames']:>7} {t['human_frames']:>6} "
            f"{_fmt(t['threshold'], '.4f'):>8} {_fmt(None if frac is None else 100 * frac, '.1f'):>8} "
            f"{_fmt(t['advantage'] and t['advantage']['p50'], '.4f'):>8} {_fmt(t['value'] and t['value']['mean']):>7}"
        )
    tot = report["totals"]
    frac = tot["positive_fraction_autonomous"]
    lines.append("-" * len(header))
    lines.append(
        f"{'total':<32} {tot['episodes']:>5} {tot['autonomous_frames']:>7} {tot['human_frames']:>6} {'':>8} "
        f"{_fmt(None if frac is None else 100 * frac, '.1f'):>8}"
    )
    return "\n".join(lines)


def _save_figure(fig, path: pathlib.Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    atomic.write_bytes(path, buf.getvalue())


def pick_episodes(
    result: _adv.AdvantageResult, intervention: np.ndarray, bounds: Sequence[tuple[int, int]], count: int = 4
) -> list[int]:
    """A few episodes worth looking at: alternately successes and failures that contain autonomous frames."""
    autonomous = np.asarray(intervention).reshape(-1) == 0
    has_auto = [bool(autonomous[start:stop].any()) for start, stop in bounds]
    succ = [i for i, ok in enumerate(result.success) if ok and has_auto[i]]
    fail = [i for i, ok in enumerate(result.success) if not ok and has_auto[i]]
    picked: list[int] = []
    while len(picked) < count and (succ or fail):
        for group in (succ, fail):
            if group and len(picked) < count:
                picked.append(group.pop(0))
    return sorted(picked)


def plot_histograms(
    report_dir: pathlib.Path,
    result: _adv.AdvantageResult,
    task_index: np.ndarray,
    intervention: np.ndarray,
    task_names: Mapping[int, str],
    max_tasks: int = 16,
) -> list[pathlib.Path]:
    """One PNG per task (at most `max_tasks`): histogram of autonomous-frame advantages with the threshold line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task_index = np.asarray(task_index).reshape(-1)
    autonomous = np.asarray(intervention).reshape(-1) == 0
    paths = []
    for task in sorted(result.thresholds)[:max_tasks]:
        adv = result.advantage[autonomous & (task_index == task)]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(adv, bins=min(60, max(10, adv.size // 20)), color="0.5")
        eps = result.thresholds[task]
        ax.axvline(eps, color="tab:red", linestyle="--", label=f"threshold {eps:.4f}")
        frac = float((adv > eps).mean()) if adv.size else 0.0
        ax.set_title(
            f"{task_names.get(task, f'task {task}')[:60]}\n{adv.size} autonomous frames, {100 * frac:.1f}% positive"
        )
        ax.set_xlabel("N-step advantage")
        ax.set_ylabel("frames")
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        path = report_dir / f"advantage_hist_task{task:03d}.png"
        _save_figure(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def _runs(kind: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal [start, stop) runs of equal entries, so each run is shaded with one rectangle."""
    if kind.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(kind)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [kind.size]])
    return [(int(a), int(b), int(kind[a])) for a, b in zip(starts, stops, strict=True)]


def plot_episode_values(
    report_dir: pathlib.Path,
    result: _adv.AdvantageResult,
    values: np.ndarray,
    intervention: np.ndarray,
    bounds: Sequence[tuple[int, int]],
    episode_ids: Sequence[int],
    episodes: Sequence[int],
) -> pathlib.Path | None:
    """One PNG: predicted value along a few episodes, positive frames shaded green, negative red, human grey."""
    if not episodes:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    import matplotlib.pyplot as plt

    values = np.asarray(values, dtype=np.float64).reshape(-1)
    human = np.asarray(intervention).reshape(-1) != 0
    styles = (("tab:green", "positive"), ("tab:red", "negative"), ("0.6", "human"))
    fig, axes = plt.subplots(len(episodes), 1, figsize=(7, 2.2 * len(episodes)), squeeze=False)
    for ax, ep in zip(axes[:, 0], episodes, strict=True):
        start, stop = bounds[ep]
        t = np.arange(stop - start)
        ind = result.adv_ind[start:stop]
        hum = human[start:stop]
        kind = np.where(hum, 2, np.where(ind == _adv.POSITIVE, 0, 1))
        seen = set()
        for run_start, run_stop, k in _runs(kind):
            color, label = styles[k]
            ax.axvspan(
                run_start - 0.5, run_stop - 0.5, color=color, alpha=0.25, lw=0, label=None if k in seen else label
            )
            seen.add(k)
        ax.plot(t, values[start:stop], color="k", linewidth=1.0)
        outcome = "success" if result.success[ep] else "failure"
        ax.set_title(f"episode {episode_ids[ep]} ({outcome}, {stop - start} frames)", fontsize=9)
        ax.set_ylim(-1.05, 0.05)
        ax.set_ylabel("value")
    handles = [Patch(color=c, alpha=0.25, label=lab) for c, lab in styles]
    handles.append(Line2D([], [], color="k", linewidth=1.0, label="V(o_t)"))
    axes[0, 0].legend(handles=handles, loc="lower right", fontsize=7, ncol=4)
    axes[-1, 0].set_xlabel("frame in episode")
    fig.tight_layout()
    path = report_dir / "values_episodes.png"
    _save_figure(fig, path)
    plt.close(fig)
    return path


def write_report(
    report_dir: str | os.PathLike,
    *,
    result: _adv.AdvantageResult,
    values: np.ndarray,
    task_index: np.ndarray,
    intervention: np.ndarray,
    bounds: Sequence[tuple[int, int]],
    episode_ids: Sequence[int],
    task_names: Mapping[int, str],
    config: _adv.AdvantageConfig,
    extra: Mapping[str, Any] | None = None,
    num_episodes_plotted: int = 4,
) -> dict[str, Any]:
    """Writes report.json and the PNGs into `report_dir` (created if needed); returns the report dict."""
    report_dir = pathlib.Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    report = summarize(
        result=result,
        values=values,
        task_index=task_index,
        intervention=intervention,
        bounds=bounds,
        task_names=task_names,
        config=config,
        extra=extra,
    )
    hist = plot_histograms(report_dir, result, task_index, intervention, task_names)
    episodes = pick_episodes(result, intervention, bounds, num_episodes_plotted)
    curve = plot_episode_values(report_dir, result, values, intervention, bounds, episode_ids, episodes)
    report["plots"] = [p.name for p in hist] + ([curve.name] if curve else [])
    report["plotted_episodes"] = [int(episode_ids[e]) for e in episodes]
    atomic.write_bytes(report_dir / REPORT_JSON, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    return report
