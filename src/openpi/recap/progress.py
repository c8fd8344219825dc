"""One progress line per relabelling process: frames/s, ETA and this process's share of the whole run.

Plain stderr writes (no dependency) so it reads the same in a terminal and in a SLURM log; with several processes
each line is prefixed with `[process i/n]`, and the share says how much of the run's frames this process owns, so
a slow host is visible at a glance.
"""

import sys
import time


class Progress:
    """`update(n)` after every batch; redraws at most twice a second and once at the end."""

    def __init__(
        self, total: int, enabled: bool, *, process_index: int = 0, process_count: int = 1, run_total: int | None = None
    ):
        self.total, self.done, self.enabled = total, 0, enabled and total > 0
        self.process_index, self.process_count = process_index, process_count
        self.run_total = total if run_total is None else run_total
        self.start = time.monotonic()
        self.last = 0.0

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        width = 30
        fill = int(width * self.done / max(self.total, 1))
        prefix = f"[process {self.process_index}/{self.process_count}] " if self.process_count > 1 else ""
        share = f" ({100.0 * self.total / max(self.run_total, 1):.0f}% of the run's {self.run_total})"
        return (
            f"{prefix}values [{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} frames{share} "
            f"{rate:.1f} frames/s ETA {eta:.0f}s"
        )

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.5 and self.done < self.total):
            return
        self.last = now
        sys.stderr.write("\r" + self.line())
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    @property
    def frames_per_s(self) -> float:
        return self.done / max(time.monotonic() - self.start, 1e-9)
