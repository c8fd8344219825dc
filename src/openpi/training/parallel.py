"""Independent trainings side by side, one single-threaded process each: throughput for small models on few cores.

A toy `sim_pi05` step is made of hundreds of small ops that XLA's CPU thread pool splits across the cores; at this
size the split buys nothing (on the 2-core machine one thread steps as fast as two: 88 ms at batch 32), so the
second core is better spent on a second, independent training (arms, training seeds). Measured there
(benchmarks/sim_step_bench.py): two single-threaded processes side by side step at 155 ms each, 12.9 steps/s for
the machine against 11.3 for one process, and two whole 600-step trainings take 106 s instead of 122 s (1.14x).

Each process gets its XLA thread flags before JAX starts (they cannot change afterwards), trains one TrainConfig
through the project's trainer, and writes its log next to the checkpoint directory. The thread count is part of
the schedule a caller chooses, not of the hardware: a training's floats may depend on how XLA splits its ops, so a
caller that wants bit-identical reruns keeps its schedule fixed (one single-threaded child reproduces what two
side by side give; tested).
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile
import time

from openpi.shared import errors

# One intra-op thread and no Eigen thread pool: the flags a single-threaded XLA CPU client needs.
SINGLE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


class ParallelTrainingError(errors.UserError):
    """A training run in a child process failed; the message names the run and its log."""


@dataclasses.dataclass(frozen=True)
class Job:
    """One training: its config and where its child's stdout/stderr go."""

    config: object  # a TrainConfig (kept untyped: the child unpickles it)
    log_path: pathlib.Path


def single_thread_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with XLA and the BLAS libraries limited to one thread."""
    env = dict(os.environ if base is None else base)
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} {SINGLE_THREAD_XLA_FLAGS}".strip()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"
    # Children of one schedule compile the same step: share compilations across them (as scripts/train.py does).
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/jax"))
    return env


def log_path_for(config) -> pathlib.Path:
    """Where a child's log goes: `<checkpoint_dir>.log` (beside the run, so a failed run's log stays with it)."""
    return pathlib.Path(str(config.checkpoint_dir) + ".log")


def train_in_processes(configs: Sequence, processes: int, *, echo=print) -> float:
    """Trains every config, at most `processes` at a time, each in its own single-threaded process.

    Returns the wall-clock seconds. Raises ParallelTrainingError naming the first failed run and its log once every
    started run has finished (a run never leaves another half-trained). `processes=0` trains in this process, one
    after another, with this process's threads (the schedule for a single training or a many-core machine).
    """
    if processes < 0:
        raise errors.ConfigError(f"processes must be >= 0, got {processes}; use 0 to train in this process.")
    start = time.monotonic()
    if processes == 0:
        from openpi.training import trainer

        for config in configs:
            trainer.train(config, progress=True)
        return time.monotonic() - start
    jobs = [Job(config, log_path_for(config)) for config in configs]
    pending, running, failures = list(jobs), [], []
    done = 0
    with tempfile.TemporaryDirectory(prefix="openpi_parallel_") as tmp:
        while pending or running:
            while pending and len(running) < processes:
                job = pending.pop(0)
                running.append((job, _start(job, pathlib.Path(tmp))))
            time.sleep(0.2)
            for job, proc in list(running):
                if proc.poll() is None:
                    continue
                running.remove((job, proc))
                done += 1
                if proc.returncode != 0:
                    failures.append(job)
                echo(
                    f"[{done}/{len(jobs)}] {job.config.exp_name}: "
                    f"{'done' if proc.returncode == 0 else f'FAILED (exit {proc.returncode})'} "
                    f"after {time.monotonic() - start:.0f} s"
                )
    if failures:
        names = ", ".join(f"{job.config.exp_name} (log: {job.log_path})" for job in failures)
        raise ParallelTrainingError(f"Training failed in a child process for {names}; read the log for the cause.")
    return time.monotonic() - start


def _start(job: Job, tmp: pathlib.Path) -> subprocess.Popen:
    spec = tmp / f"{job.config.exp_name}.pkl"
    spec.write_bytes(pickle.dumps(job.config))
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    log = job.log_path.open("w")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "openpi.training.parallel", str(spec)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=single_thread_env(),
        )
    finally:
        log.close()


def _child(spec_path: str) -> None:
    """The child's body: unpickle the config and train it (progress as plain log lines, no carriage returns)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = pickle.loads(pathlib.Path(spec_path).read_bytes())
    from openpi.training import trainer

    trainer.train(config, progress=False)


if __name__ == "__main__":
    _child(sys.argv[1])
