"""Statistics for closed-loop evaluation: success rates with confidence intervals, tables and plots.

Evaluation runs a few dozen episodes per task and arm, so a bare success rate hides how uncertain it is:
8/10 and 80/100 are both "80 %". Every rate here carries a Wilson score interval, which (unlike the normal
approximation p ± z·sqrt(p(1-p)/n)) stays inside [0, 1] and does not collapse to zero width at 0/n or n/n.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
import io
import math
import os
import pathlib

from openpi.shared import atomic

__all__ = ["EpisodeResult", "format_table", "paired_comparison", "plot_success", "summarize", "wilson_interval"]

ALL_TASKS = "(all)"


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: `successes` out of `n` at `z` standard deviations.

    z = 1.96 gives the 95 % interval. With no episodes nothing is known, so the interval is (0, 1).
    """
    if n < 0:
        raise ValueError(f"The number of episodes must be 0 or more, got n={n}.")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie between 0 and n={n}, got {successes}.")
    if not z > 0:
        raise ValueError(f"z must be positive (1.96 for a 95 % interval), got {z}.")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half_width = (z / denominator) * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    # At 0/n and n/n one bound is exactly 0 or 1 in exact arithmetic; pin it so rounding cannot push it past.
    low = 0.0 if successes == 0 else max(0.0, center - half_width)
    high = 1.0 if successes == n else min(1.0, center + half_width)
    return low, high


@dataclasses.dataclass(frozen=True)
class EpisodeResult:
    """One evaluated (or collected) episode.

    `interventions` counts operator takeovers and `human_steps` the steps the operator drove, so that
    collection runs can report how much of the data came from the stand-in human.
    """

    task: str
    seed: int
    success: bool
    steps: int
    interventions: int = 0
    human_steps: int = 0
    outcome: str | None = None
    """How the episode ended where the simulator says ("success", "wrong_button", "timeout"); None if it does not."""

    def __post_init__(self) -> None:
        where = f"episode (task {self.task!r}, seed {self.seed})"
        if self.steps < 0:
            raise ValueError(f"The {where} has steps={self.steps}; steps must be 0 or more.")
        if self.interventions < 0:
            raise ValueError(f"The {where} has interventions={self.interventions}; it must be 0 or more.")
        if not 0 <= self.human_steps <= self.steps:
            raise ValueError(
                f"The {where} has human_steps={self.human_steps}; it must lie between 0 and steps={self.steps}."
            )


def _stats(results: Sequence[EpisodeResult]) -> dict:
    n = len(results)
    successes = sum(1 for r in results if r.success)
    low, high = wilson_interval(successes, n)
    success_steps = [r.steps for r in results if r.success]
    total_steps = sum(r.steps for r in results)
    return {
        "episodes": n,
        "successes": successes,
        "success_rate": successes / n,
        "ci95": [low, high],
        "mean_steps_to_success": sum(success_steps) / len(success_steps) if success_steps else None,
        "interventions_per_episode": sum(r.interventions for r in results) / n,
        "human_step_fraction": sum(r.human_steps for r in results) / total_steps if total_steps else 0.0,
    }


def summarize(results: Iterable[EpisodeResult]) -> dict:
    """Per-task and overall statistics, as a JSON-ready dict.

    Returns ``{"overall": stats, "tasks": {task: stats}}`` where each ``stats`` holds ``episodes``,
    ``successes``, ``success_rate``, ``ci95`` ([low, high], Wilson), ``mean_steps_to_success`` (successful
    episodes only, None when there are none: failures end at the step limit and would only measure it),
    ``interventions_per_episode`` and ``human_step_fraction`` (operator-driven steps over all steps).
    """
    results = list(results)
    if not results:
        raise ValueError("summarize needs at least one EpisodeResult; run some episodes first.")
    by_task: dict[str, list[EpisodeResult]] = {}
    for result in results:
        by_task.setdefault(result.task, []).append(result)
    return {
        "overall": _stats(results),
        "tasks": {task: _stats(by_task[task]) for task in sorted(by_task)},
    }


def paired_comparison(a: Iterable[EpisodeResult], b: Iterable[EpisodeResult]) -> dict:
    """Arm `a` against arm `b` on the same episodes (task, seed): an exact two-sided McNemar test.

    Two arms evaluated on the same layouts are not independent samples: most layouts are easy or hard for both.
    Only the discordant pairs (one arm succeeds, the other fails) carry evidence, and under "no difference" each
    is equally likely to go either way, so their split is Binomial(discordant, 1/2). Wilson intervals of the two
    rates ignore the pairing and are far wider than this test needs. Episodes of one arm without a partner in the
    other are an error: the comparison would silently drop them.
    """
    by_key_a = _by_episode(a, "a")
    by_key_b = _by_episode(b, "b")
    if by_key_a.keys() != by_key_b.keys():
        missing = sorted(by_key_a.keys() ^ by_key_b.keys())[:3]
        raise ValueError(
            f"Paired arms must be evaluated on the same (task, seed) episodes; {len(by_key_a.keys() ^ by_key_b.keys())}"
            f" differ, e.g. {missing}. Evaluate both arms with the same seeds."
        )
    keys = sorted(by_key_a)
    a_only = sum(1 for k in keys if by_key_a[k].success and not by_key_b[k].success)
    b_only = sum(1 for k in keys if by_key_b[k].success and not by_key_a[k].success)
    n = len(keys)
    return {
        "pairs": n,
        "a_successes": sum(1 for k in keys if by_key_a[k].success),
        "b_successes": sum(1 for k in keys if by_key_b[k].success),
        "a_only": a_only,
        "b_only": b_only,
        "difference": (a_only - b_only) / n if n else 0.0,
        "p_value": _two_sided_binomial_half(min(a_only, b_only), a_only + b_only),
    }


def _by_episode(results: Iterable[EpisodeResult], name: str) -> dict[tuple[str, int], EpisodeResult]:
    out: dict[tuple[str, int], EpisodeResult] = {}
    for r in results:
        if (r.task, r.seed) in out:
            raise ValueError(f"Arm {name} has two episodes of task {r.task!r} with seed {r.seed}; pair one each.")
        out[(r.task, r.seed)] = r
    return out


def _two_sided_binomial_half(k: int, n: int) -> float:
    """P(X <= k or X >= n - k) for X ~ Binomial(n, 1/2), with k <= n / 2 (exact; 1.0 when n == 0)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def _stats_entry(summary: Mapping, where: str) -> Mapping:
    """Accepts a `summarize` result (its overall entry is used) or one of its per-task entries."""
    if "overall" in summary:
        return summary["overall"]
    if "success_rate" in summary and "ci95" in summary:
        return summary
    raise ValueError(f"{where} is not a summarize() result (no 'overall' or 'success_rate' key); pass summarize(...).")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_table(summary_by_arm: Mapping[str, Mapping]) -> str:
    """A console table of `summarize` results: one row per arm and task, plus an overall row per multi-task arm."""
    header = ("arm", "task", "episodes", "success", "95% CI", "steps to success", "interventions/ep", "human steps")
    rows: list[tuple[str, ...]] = []
    for arm, summary in summary_by_arm.items():
        if "overall" not in summary or "tasks" not in summary:
            raise ValueError(f"The summary for arm {arm!r} is not a summarize() result; pass summarize(results).")
        entries = list(summary["tasks"].items())
        if len(entries) > 1:
            entries.append((ALL_TASKS, summary["overall"]))
        for task, stats in entries:
            low, high = stats["ci95"]
            steps = stats["mean_steps_to_success"]
            rows.append(
                (
                    arm,
                    task,
                    str(stats["episodes"]),
                    f"{_percent(stats['success_rate'])} ({stats['successes']}/{stats['episodes']})",
                    f"[{100 * low:.1f}, {100 * high:.1f}]",
                    "-" if steps is None else f"{steps:.1f}",
                    f"{stats['interventions_per_episode']:.2f}",
                    _percent(stats["human_step_fraction"]),
                )
            )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        # Names left-aligned, numbers right-aligned so their digits line up.
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    separator = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


def plot_success(
    series: Mapping[str, Sequence[tuple[float, Mapping]]], path: str | os.PathLike, title: str
) -> pathlib.Path:
    """Writes a PNG of success rate (with 95 % Wilson error bars) against `x` (e.g. RECAP iteration), one line per arm.

    Each point's summary is a `summarize` result (its overall rate is plotted) or one per-task entry of it.
    The figure is drawn with the Agg canvas directly, without pyplot, so it needs no display and does not
    change the process-wide matplotlib backend; the file is written atomically.
    """
    from matplotlib import figure
    from matplotlib.backends import backend_agg

    if not any(series.values()):
        raise ValueError("plot_success needs at least one (x, summary) point; evaluate some iterations first.")
    fig = figure.Figure(figsize=(9.0, 4.5), dpi=100)
    backend_agg.FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn = [arm for arm, points in series.items() if points]
    for arm, points in series.items():
        if not points:
            continue
        ordered = sorted(points, key=lambda point: point[0])
        xs, rates, below, above = [], [], [], []
        for x, summary in ordered:
            stats = _stats_entry(summary, f"The point x={x} of arm {arm!r}")
            low, high = stats["ci95"]
            xs.append(x)
            rates.append(stats["success_rate"])
            below.append(stats["success_rate"] - low)
            above.append(high - stats["success_rate"])
        # Arms at the same x side by side (a few hundredths apart), so equal rates do not hide each other.
        shift = 0.04 * (drawn.index(arm) - (len(drawn) - 1) / 2)
        ax.errorbar([x + shift for x in xs], rates, yerr=[below, above], marker="o", capsize=4, label=arm)
    ax.set_ylim(-0.02, 1.02)
    xs_all = sorted({x for points in series.values() for x, _ in points})
    if all(float(x).is_integer() for x in xs_all):
        ax.set_xticks(xs_all)
    ax.set_xlabel("iteration")
    ax.set_ylabel("success rate (95% Wilson CI)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic.write_bytes(path, buffer.getvalue())
