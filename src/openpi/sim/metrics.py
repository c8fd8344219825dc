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

import numpy as np

from openpi.shared import atomic

__all__ = [
    "EpisodeResult",
    "combined_paired_comparison",
    "concordance_auc",
    "format_table",
    "paired_comparison",
    "plot_success",
    "summarize",
    "wilson_interval",
]

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


def combined_paired_comparison(per_stratum: Sequence[Mapping]) -> dict:
    """One exact test of arm `a` against arm `b` over several strata (e.g. training seeds), from each stratum's
    `paired_comparison`: the sign test on the discordant pairs of every stratum together.

    Within a stratum a discordant pair is, under "no difference", equally likely to favour either arm, and the
    strata (independently trained checkpoints) add independent pairs; so the pooled `a_only` of all strata is
    Binomial(all discordant, 1/2). This is the exact form of the Cochran-Mantel-Haenszel test for matched pairs
    stratified by seed, whose statistic (sum a_only - sum b_only)^2 / (sum of discordant) is the pooled McNemar's.
    Pooling counts, not p-values, lets three seeds that each point the same way add up to evidence none has alone.
    `difference` weighs every pair equally (the mean of the strata's differences when they pair the same layouts).
    """
    strata = list(per_stratum)
    if not strata:
        raise ValueError(
            "combined_paired_comparison needs at least one paired_comparison result; pair some arms first."
        )
    a_only = sum(int(s["a_only"]) for s in strata)
    b_only = sum(int(s["b_only"]) for s in strata)
    pairs = sum(int(s["pairs"]) for s in strata)
    return {
        "strata": len(strata),
        "pairs": pairs,
        "a_only": a_only,
        "b_only": b_only,
        "difference": (a_only - b_only) / pairs if pairs else 0.0,
        "differences": [float(s["difference"]) for s in strata],
        "p_value": _two_sided_binomial_half(min(a_only, b_only), a_only + b_only),
    }


def concordance_auc(score: Sequence[float], truth: Sequence[float], groups: Sequence | None = None) -> float | None:
    """How often `score` orders two items as `truth` does: over every pair whose truths differ (and, with `groups`,
    that share a group), 1 when the item with the higher truth has the higher score, 1/2 on a score tie, else 0.

    With a two-level truth (success / failure) this is the ROC AUC (the Mann-Whitney probability); with a graded
    truth (how good an action was) it is Harrell's concordance, so one number grades a value model's success
    prediction and a relabeller's advantages alike, and 0.5 is chance either way. Pairs of equal truth carry no
    order to recover and are left out; `groups` keeps comparisons inside e.g. one task, as the per-task thresholds
    do. None when no pair differs in truth.
    """
    score = np.asarray(score, np.float64).reshape(-1)
    truth = np.asarray(truth, np.float64).reshape(-1)
    groups = np.zeros(len(score), np.int64) if groups is None else np.asarray(groups).reshape(-1)
    if not len(score) == len(truth) == len(groups):
        raise ValueError(
            f"score, truth and groups need one entry per item; got {len(score)}, {len(truth)}, {len(groups)}."
        )
    if not (np.isfinite(score).all() and np.isfinite(truth).all()):
        raise ValueError("concordance_auc got NaN or inf in score or truth; pass only the items that have both.")
    agree, compared = 0.0, 0
    for group in np.unique(groups):
        s, t = score[groups == group], truth[groups == group]
        rows = max(1, 1_000_000 // max(1, len(s)))  # bounded memory: a block of rows against every item
        for start in range(0, len(s), rows):
            dt = np.sign(t[start : start + rows, None] - t[None, :])
            ds = np.sign(s[start : start + rows, None] - s[None, :])
            differ = dt != 0
            agree += float(np.sum((1.0 + ds * dt)[differ]) / 2.0)
            compared += int(differ.sum())
    return agree / compared if compared else None


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

    Each point's summary is a `summarize` result (its overall rate is plotted) or one per-task entry of it. An arm
    with several points at one x (one per training seed) shows each of them as a small marker and its line joins
    their means: the spread between seeds is the uncertainty there, and a Wilson bar per seed would hide it.
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
        by_x: dict[float, list[Mapping]] = {}
        for x, summary in points:
            by_x.setdefault(x, []).append(_stats_entry(summary, f"The point x={x} of arm {arm!r}"))
        xs = sorted(by_x)
        # Arms at the same x side by side (a few hundredths apart), so equal rates do not hide each other.
        shift = 0.04 * (drawn.index(arm) - (len(drawn) - 1) / 2)
        rates = [float(np.mean([s["success_rate"] for s in by_x[x]])) for x in xs]
        if all(len(by_x[x]) == 1 for x in xs):
            below = [rate - by_x[x][0]["ci95"][0] for x, rate in zip(xs, rates, strict=True)]
            above = [by_x[x][0]["ci95"][1] - rate for x, rate in zip(xs, rates, strict=True)]
            ax.errorbar([x + shift for x in xs], rates, yerr=[below, above], marker="o", capsize=4, label=arm)
            continue
        (line,) = ax.plot([x + shift for x in xs], rates, marker="_", markersize=12, label=f"{arm} (seeds, mean)")
        seed_xs = [x + shift for x in xs for _ in by_x[x]]
        seed_rates = [s["success_rate"] for x in xs for s in by_x[x]]
        ax.scatter(seed_xs, seed_rates, s=14, color=line.get_color(), alpha=0.7)
    ax.set_ylim(-0.02, 1.02)
    xs_all = sorted({x for points in series.values() for x, _ in points})
    if all(float(x).is_integer() for x in xs_all):
        ax.set_xticks(xs_all)
    ax.set_xlabel("iteration")
    ax.set_ylabel("success rate (bars: 95% Wilson CI; dots: seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic.write_bytes(path, buffer.getvalue())
