"""The one progress line of every long job that is not a training loop (relabelling, rollouts, evaluation).

Training uses tqdm (its loop owns the terminal); everything else counts work items through this class so the
lines read alike: `label: [####....] done/total unit (share of the run) rate unit/s, elapsed, ETA`. On a terminal
the line redraws in place; in a file (a SLURM log) it is printed as a new line at most every `interval_s`, so logs
stay short. With several processes each line is prefixed `[process i/n]` and says this process's share of the
run's work, so a slow host is visible at a glance. Plain stderr writes: it works in a subprocess and in a log.
"""

import sys
import threading
import time


class Progress:
    """`update(n)` after every item or batch (thread-safe); redraws at most every `interval_s` and at the end."""

    def __init__(
        self,
        total: int,
        label: str = "",
        *,
        unit: str = "frames",
        enabled: bool = True,
        interval_s: float = 0.5,
        process_index: int = 0,
        process_count: int = 1,
        run_total: int | None = None,
    ):
        self.total, self.label, self.unit = total, label, unit
        self.enabled = enabled and total > 0
        self.interval_s = interval_s
        self.process_index, self.process_count = process_index, process_count
        self.run_total = total if run_total is None else run_total
        self.done = 0
        self.start = time.monotonic()
        self._last = -float("inf")
        self._lock = threading.Lock()
        self._redraw = sys.stderr.isatty()

    @property
    def rate(self) -> float:
        """Items per second since the start."""
        return self.done / max(time.monotonic() - self.start, 1e-9)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        width = 30
        fill = int(width * self.done / max(self.total, 1))
        prefix = f"[process {self.process_index}/{self.process_count}] " if self.process_count > 1 else ""
        label = f"{self.label}: " if self.label else ""
        share = (
            f" ({100.0 * self.total / max(self.run_total, 1):.0f}% of the run's {self.run_total})"
            if self.run_total != self.total
            else ""
        )
        return (
            f"{prefix}{label}[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} {self.unit}{share} "
            f"{rate:.2f} {self.unit}/s, elapsed {elapsed:.0f} s, ETA {eta:.0f} s"
        )

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            finished = self.done >= self.total
            if not self.enabled or (now - self._last < self.interval_s and not finished):
                return
            self._last = now
            if self._redraw:
                sys.stderr.write("\r" + self.line() + ("\n" if finished else ""))
            else:
                sys.stderr.write(self.line() + "\n")
            sys.stderr.flush()
