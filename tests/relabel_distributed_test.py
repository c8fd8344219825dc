"""Relabelling on two processes joined by jax.distributed (127.0.0.1, JAX on CPU), as training's multi-host test.

The dataset puts one task in the first episodes only, so all its frames land on process 0 while the other tasks
span both processes: the thresholds must still be computed over the whole dataset, by process 0 after the barrier.
"""

import hashlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import relabel_support

from openpi.datasets import lerobot
from openpi.datasets import synthetic
from openpi.recap import advantage
from openpi.recap import provenance
from openpi.relabel import relabel

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "label_advantage_from_vlm.py"
LOOKAHEAD = 4
ALONE = synthetic.TASKS[0]


def _hashes(root: pathlib.Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_", "SLURM_"))}
    return {**env, "JAX_PLATFORMS": "cpu", **extra}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, gemma3_spm_model):
    base = tmp_path_factory.mktemp("relabel_dist")
    size = {"image_size": 32, "max_length": 16}
    alone = synthetic.generate(synthetic.SyntheticConfig(num_episodes=4, tasks=(ALONE,), **size))
    shared = synthetic.generate(synthetic.SyntheticConfig(num_episodes=10, tasks=synthetic.TASKS[1:3], **size))
    data = base / "ds"
    synthetic.write_dataset(data, synthetic.SyntheticConfig(**size), episodes=[*alone, *shared])
    run = relabel_support.train_value(data, gemma3_spm_model, base / "value_run", steps=6)
    return {"base": base, "data": data, "run": run, "tok": gemma3_spm_model}


def _cmd(setup, out: pathlib.Path, cache: pathlib.Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(SCRIPT), *extra,
        f"--data_dir={setup['data']}", f"--checkpoint_dir={setup['run']}", f"--output_dir={out}",
        f"--tokenizer_path={setup['tok']}", f"--cache_dir={cache}", "--batch_size=4", f"--lookahead={LOOKAHEAD}",
        "--num_workers=1", "--no-progress",
    ]  # fmt: skip


def _two(setup, out, cache, *, flags: bool = False, env1: dict[str, str] | None = None) -> list[subprocess.Popen]:
    """Both processes of a run; `env1` is extra environment for process 1 only."""
    port = _free_port()
    procs = []
    for i in range(2):
        only = (env1 or {}) if i == 1 else {}
        if flags:  # training's flags, before the (implicit) config name
            extra = (f"--coordinator-address=127.0.0.1:{port}", "--num-processes=2", f"--process-id={i}")
            env = _env(**only)
        else:
            extra = ()
            env = _env(
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i), **only
            )
        cmd = _cmd(setup, out, cache, *extra)
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    return procs


def _wait(procs, timeout=300.0) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out[-4000:]


@pytest.fixture(scope="module")
def reference(setup):
    out = setup["base"] / "single"
    proc = subprocess.run(
        _cmd(setup, out, setup["base"] / "single_cache"), capture_output=True, text=True, env=_env(), timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _owners(data: pathlib.Path) -> tuple[dict[int, int], relabel.DatasetColumns, np.ndarray]:
    """{episode position: process} as both processes compute it, the columns, and the needed frames."""
    ds = lerobot.LeRobotDataset.open(data)
    cols = relabel.read_columns(ds)
    needed = advantage.frames_needing_values(cols.intervention == 0, cols.bounds, LOOKAHEAD)
    works = relabel.episode_works(cols, needed)
    owner = relabel.assign_episodes([len(w.frames) for w in works], 2)
    return {w.episode: int(p) for w, p in zip(works, owner, strict=True)}, cols, needed


def test_two_processes_write_the_single_process_bytes(setup, reference, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    _wait(_two(setup, out, cache))
    assert _hashes(out) == _hashes(reference)

    report = json.loads((tmp_path / "out.relabel_report" / "report.json").read_text())
    inference = report["inference"]
    assert inference["processes"] == 2 and inference["devices"] == 2
    assert [p["process_index"] for p in inference["per_process"]] == [0, 1]
    assert all(p["frames_computed"] > 0 for p in inference["per_process"])

    # One task lives on process 0 only, the others on both; every threshold is over the whole dataset.
    owners, cols, needed = _owners(setup["data"])
    ds = lerobot.LeRobotDataset.open(setup["data"])
    task_of = {e: ds.tasks[int(cols.task_index[start])] for e, (start, _) in enumerate(cols.bounds)}
    alone_procs = {p for e, p in owners.items() if task_of[e] == ALONE}
    shared_procs = {p for e, p in owners.items() if task_of[e] != ALONE}
    assert alone_procs == {0} and shared_procs == {0, 1}
    values = relabel.collect_values(cols, relabel.episode_works(cols, needed), relabel_cache(cache), "the test")
    result = advantage.compute(
        reward=cols.reward, reward_label=cols.reward_label, intervention=cols.intervention,
        task_index=cols.task_index, values=values, bounds=cols.bounds,
        config=advantage.AdvantageConfig(lookahead=LOOKAHEAD),
    )  # fmt: skip
    recorded = provenance.read(out)["relabel"]["thresholds"]
    assert recorded == {ds.tasks[t]: eps for t, eps in result.thresholds.items()}
    assert set(recorded) == {ALONE, *synthetic.TASKS[1:3]}


def relabel_cache(cache_root: pathlib.Path) -> relabel.ValueCache:
    """The run's cache directory (one key digest under the root), opened without touching its files."""
    (key_dir,) = [p for p in cache_root.iterdir() if p.is_dir()]
    cache = relabel.ValueCache.__new__(relabel.ValueCache)
    cache.dir = key_dir
    return cache


def test_sigkill_one_process_then_rerun_gives_the_same_bytes(setup, reference, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    owners, cols, _ = _owners(setup["data"])
    ones = [cols.episode_ids[e] for e, p in owners.items() if p == 1]
    assert len(ones) >= 2  # so that one cached episode is mid-way

    def cached_by_one() -> int:
        return sum(1 for e in ones for _ in cache.rglob(f"episode_{e:06d}.npz"))

    # Process 1 blocks after caching its first episode: the kill lands mid-way, at a known point.
    procs = _two(setup, out, cache, flags=True, env1={relabel.PAUSE_AFTER_EPISODES_ENV: "1"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and procs[1].poll() is None and cached_by_one() < 1:
        time.sleep(0.05)
    alive = procs[1].poll() is None
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    # Process 0 waits at the barrier for its dead peer (or fails once the coordinator notices): end the run.
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    for p in procs:
        p.stdout.close()
    assert alive, "process 1 ended before it cached an episode; it should have paused there"
    assert not out.exists() and cached_by_one() == 1
    # Everything rerun: the finished episodes come from the cache, the rest is scored, the bytes are the same.
    _wait(_two(setup, out, cache))
    assert _hashes(out) == _hashes(reference)
    assert not list(cache.rglob("*.tmp"))
    report = json.loads((tmp_path / "out.relabel_report" / "report.json").read_text())
    assert report["inference"]["frames_cached"] > 0
    assert report["inference"]["per_process"][1]["frames_cached"] > 0


@pytest.mark.slow
def test_a_process_that_fails_early_fails_every_process_with_its_message(setup, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    procs = _two(setup, out, cache, env1={relabel.FAIL_PROCESS_ENV: "1"})
    logs = []
    for p in procs:
        log, _ = p.communicate(timeout=300)
        logs.append(log)
    # Both stop with the one user error naming process 1 (exit 2), instead of process 0 waiting at the barrier.
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 2, log[-4000:]
        assert "Relabelling process 1 failed" in log and relabel.FAIL_PROCESS_ENV in log, log[-4000:]
    assert not out.exists()
    # The next run (no failure) is not failed by the stale error file, and reuses process 0's cached values.
    _wait(_two(setup, out, cache))
    assert out.exists() and not list(cache.glob("*.error"))
