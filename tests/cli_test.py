"""Every script follows the one CLI convention (`openpi.shared.cli`), checked on the real scripts as a user runs them:

- `--help` exits 0 and prints usage (and, for a script that takes a registered config name, every name);
- a script that takes a config name, run without one, prints that usage to stderr and exits 2;
- an unknown config (or env/task/policy config) name exits 2 and suggests the nearest name;
- a bad flag exits 2 with one line on stderr and no traceback;
- an output path that cannot be created (here: under a regular file) exits 2 naming it, before any work.

Every benchmark in `benchmarks/` follows the same convention for a bad flag (it fails while parsing, before any
work). A new script in `scripts/` must get a row in `CONTRACTS`. All the subprocesses start at once and are waited for
together, so the file costs about one import of the heaviest script rather than one per check.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import re
import subprocess
import sys

import pytest

from openpi.relabel import relabel_config
from openpi.training import config as _config
from openpi.training import value_config

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
BENCHMARKS = REPO / "benchmarks"
BLOCKED = REPO / "pyproject.toml"  # a regular file: nothing can be created under it
FIXTURE = str(REPO / "tests" / "fixtures" / "lerobot" / "v3.0_image")  # a small real dataset to read


@dataclasses.dataclass(frozen=True)
class Contract:
    names: tuple[str, ...] = ()
    """Config names the script's `--help` must list (empty: the script takes no config name)."""
    unknown: tuple[tuple[str, ...], str] | None = None
    """Arguments with a misspelt name, and the nearest name the error must suggest."""
    config: tuple[str, ...] = ()
    """Arguments before the bad flag (a valid config name, required flags), so it is reported as a bad flag."""
    unwritable: tuple[str, ...] | None = None
    """Arguments that send the script's output under `BLOCKED` (a regular file), which it must refuse at once."""


CONTRACTS: dict[str, Contract] = {
    "train.py": Contract(
        names=tuple(_config.config_names()), unknown=(("pi06_yam_vial_30fp",), "pi06_yam_vial_30fps"),
        config=("debug_pi06",), unwritable=("debug_pi06", "--exp-name=x", f"--checkpoint-base-dir={BLOCKED}/ckpt"),
    ),
    "train_value.py": Contract(
        names=tuple(value_config.config_names()), unknown=(("value_dem",), "value_demo"), config=("value_demo",)
    ),
    "compute_norm_stats.py": Contract(
        names=(*_config.config_names(), *value_config.config_names()),
        unknown=(("pi06_yam_vial_30fp",), "pi06_yam_vial_30fps"),
        config=("debug_pi06",), unwritable=(FIXTURE, f"--output-dir={BLOCKED}/assets"),
    ),
    "label_advantage_from_vlm.py": Contract(
        names=tuple(relabel_config.CONFIGS), unknown=(("yam_vail",), "yam_vial"), config=("yam_vial",),
        unwritable=("yam_vial", f"--data_dir={FIXTURE}", "--checkpoint_dir=/nonexistent/value_run",
                    f"--output_dir={BLOCKED}/relabelled"),
    ),
    "serve_policy.py": Contract(
        unknown=(("policy:dummy", "--policy.config=debug_pi6"), "debug_pi06"), config=("policy:dummy",)
    ),
    "collect_rollouts.py": Contract(
        unknown=(("--tasks", "press_rd"), "press_red"), unwritable=("--episodes-per-task=1", f"--output-dir={BLOCKED}/data")
    ),
    "probe_policy.py": Contract(
        names=tuple(_config.config_names()), unknown=(("sim_pi06_infr",), "sim_pi06_infer"), config=("sim_pi06",)
    ),
    "eval_policy.py": Contract(unknown=(("--env", "tabletp"), "tabletop")),
    "add_recap_columns.py": Contract(
        config=("/nonexistent/dataset", "--output-dir", "/nonexistent/out"),
        unwritable=(FIXTURE, "--output-dir", f"{BLOCKED}/out", "--overwrite-columns"),
    ),
    "merge_datasets.py": Contract(
        config=("/nonexistent/a", "--output-dir", "/nonexistent/out"),
        unwritable=(FIXTURE, "--output-dir", f"{BLOCKED}/out", "--allow-unrecorded-label-scale"),
    ),
    "make_demo_dataset.py": Contract(config=("--out", "/nonexistent/out"), unwritable=("--out", f"{BLOCKED}/out")),
    "demo.py": Contract(unwritable=("--out", f"{BLOCKED}/demo")),
}  # fmt: skip

BAD_FLAG = "--no-such-flag=1"


def _checks() -> dict[tuple[str, str], list[str]]:
    checks = {}
    for script, contract in CONTRACTS.items():
        checks[(script, "help")] = ["--help"]
        checks[(script, "bad_flag")] = [*contract.config, BAD_FLAG]
        if contract.unknown is not None:
            checks[(script, "unknown")] = list(contract.unknown[0])
        if contract.names:
            checks[(script, "no_args")] = []
        if contract.unwritable is not None:
            checks[(script, "unwritable")] = list(contract.unwritable)
    return checks


def _benchmarks() -> list[str]:
    return sorted(path.name for path in BENCHMARKS.glob("*.py"))


def _run_at_once(directory: pathlib.Path, checks: dict[tuple[str, str], list[str]]) -> dict:
    """Runs every check (script name in `directory`, check) -> arguments at once (Popen all, then wait), in an
    empty working directory."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "COLUMNS": "200"}
    cwd = pathlib.Path(os.environ.get("TMPDIR", "/tmp"))
    procs = {
        key: (args, subprocess.Popen(
            [sys.executable, str(directory / key[0]), *args], cwd=cwd, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))
        for key, args in checks.items()
    }  # fmt: skip
    results = {}
    for key, (args, proc) in procs.items():
        out, err = proc.communicate(timeout=600)
        results[key] = subprocess.CompletedProcess(args, proc.returncode, out, err)
    return results


@functools.cache
def _results() -> dict[tuple[str, str], subprocess.CompletedProcess]:
    return _run_at_once(SCRIPTS, _checks())


@functools.cache
def _benchmark_results() -> dict[tuple[str, str], subprocess.CompletedProcess]:
    """A batch of its own: a benchmark imports as much as a script, and one batch of every process at once would
    hold that much memory at once."""
    return _run_at_once(BENCHMARKS, {(name, "bad_flag"): [BAD_FLAG] for name in _benchmarks()})


def test_every_script_states_its_contract():
    scripts = {path.name for path in SCRIPTS.glob("*.py") if not path.name.endswith("_test.py")}
    assert scripts == set(CONTRACTS), f"scripts without a row in CONTRACTS: {sorted(scripts - set(CONTRACTS))}"


@pytest.mark.parametrize("script", sorted(CONTRACTS))
def test_help_exits_0_with_usage_and_the_config_names(script):
    result = _results()[(script, "help")]
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower() or f"scripts/{script}" in result.stdout  # a usage line or examples
    missing = [name for name in CONTRACTS[script].names if name not in result.stdout.split()]
    assert not missing, f"{script} --help does not list {missing}"


@pytest.mark.parametrize("script", sorted(s for s, c in CONTRACTS.items() if c.unknown is not None))
def test_unknown_name_suggests_the_nearest(script):
    result = _results()[(script, "unknown")]
    nearest = CONTRACTS[script].unknown[1]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    assert re.search(rf"(?<!\w){re.escape(nearest)}(?!\w)", last), result.stderr[-2000:]


@pytest.mark.parametrize("script", sorted(s for s, c in CONTRACTS.items() if c.names))
def test_no_config_name_prints_the_usage_and_exits_2(script):
    """Issue 29.12: without a config name there is nothing to run; the usage used to come with exit status 0."""
    result = _results()[(script, "no_args")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not result.stdout, result.stdout[-2000:]
    assert result.stderr.startswith("usage:"), result.stderr[-2000:]
    missing = [name for name in CONTRACTS[script].names if name not in result.stderr.split()]
    assert not missing, f"{script} without arguments does not list {missing}"


def _assert_one_line_exit_2(result: subprocess.CompletedProcess) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and "--no-such-flag" in lines[0], result.stderr[-2000:]


@pytest.mark.parametrize("script", sorted(CONTRACTS))
def test_bad_flag_exits_2_with_one_line(script):
    _assert_one_line_exit_2(_results()[(script, "bad_flag")])


@pytest.mark.parametrize("script", sorted(s for s, c in CONTRACTS.items() if c.unwritable is not None))
def test_an_output_that_cannot_be_created_exits_2_naming_it(script):
    """Issue 29.7: these printed a traceback at their first write (collect_rollouts after collecting everything)."""
    result = _results()[(script, "unwritable")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert f": {BLOCKED} is a file, not a directory; choose another output path." in last, result.stderr[-2000:]


@pytest.mark.parametrize("benchmark", _benchmarks())
def test_a_benchmark_with_a_bad_flag_exits_2_with_one_line(benchmark):
    """Issue 29.12: 13 of the 18 benchmarks printed tyro's five-line box instead."""
    _assert_one_line_exit_2(_benchmark_results()[(benchmark, "bad_flag")])
