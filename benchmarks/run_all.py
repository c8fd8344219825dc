"""Run every benchmark in this folder and write one combined JSON and a markdown table.

Each benchmark is its own script (`*_bench.py`) with a tyro CLI that prints a table and writes
`benchmarks/results/<name>.json`. This entry point runs them one after another (never in parallel: the
numbers are only meaningful on an otherwise idle machine), then gathers their JSON files into
`benchmarks/results/all.json` and `benchmarks/RESULTS.md`, stamped with the machine they ran on.

    uv run benchmarks/run_all.py              # CPU sizes
    uv run benchmarks/run_all.py --full       # full sizes, on a GPU machine
    uv run benchmarks/run_all.py --only model_bench serving_bench
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

BENCH_DIR = pathlib.Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


@dataclasses.dataclass(frozen=True)
class Args:
    full: bool = False
    """Pass `--full` to every benchmark (real model sizes; needs a GPU)."""
    only: tuple[str, ...] = ()
    """Run only these benchmarks (names without `.py`)."""
    timeout_s: int = 1800
    """Per-benchmark wall-clock limit."""


def discover() -> list[str]:
    return sorted(p.stem for p in BENCH_DIR.glob("*_bench.py"))


def machine_description() -> dict[str, object]:
    info: dict[str, object] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import jax

        info["jax"] = jax.__version__
        info["devices"] = [str(d) for d in jax.devices()]
    except Exception as exc:  # JAX missing or broken: still report the rest.
        info["jax_error"] = str(exc)
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def flatten(prefix: str, value: object, out: dict[str, object]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            label = v.get("name") or v.get("config") or v.get("case") or str(i)
            flatten(f"{prefix}[{label}]", {k: x for k, x in v.items() if k not in ("name", "config", "case")}, out)
    else:
        out[prefix] = value


def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(results: dict[str, dict], machine: dict[str, object], when: str) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Run {when} on: `{machine.get('platform')}`, {machine.get('cpu_count')} CPU cores, "
        f"{machine.get('mem_total_gib', '?')} GiB RAM, JAX {machine.get('jax', '?')}, devices "
        f"{', '.join(machine.get('devices', []) or ['?'])}.",
        "",
        "Regenerate with `uv run benchmarks/run_all.py` (add `--full` on a GPU machine).",
        "",
    ]
    for name, result in results.items():
        lines += [f"## {name}", "", "| metric | value |", "|---|---|"]
        flat: dict[str, object] = {}
        flatten("", result, flat)
        lines += [f"| {k} | {format_value(v)} |" for k, v in flat.items()]
        lines.append("")
    return "\n".join(lines)


def main(args: Args) -> None:
    names = list(args.only) or discover()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}
    for name in names:
        script = BENCH_DIR / f"{name}.py"
        if not script.exists():
            raise SystemExit(f"No benchmark named {name!r}; available: {', '.join(discover())}.")
        cmd = [sys.executable, str(script)] + (["--full"] if args.full else [])
        print(f"==> {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=args.timeout_s, check=False)
            status[name] = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            status[name] = f"timeout after {args.timeout_s} s"
        print(f"<== {name}: {status[name]} in {time.perf_counter() - start:.1f} s", flush=True)

    results: dict[str, dict] = {}
    for name in names:
        path = RESULTS_DIR / f"{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
    machine = machine_description()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    combined = {"machine": machine, "when": when, "status": status, "results": results}
    (RESULTS_DIR / "all.json").write_text(json.dumps(combined, indent=2, default=str))
    (BENCH_DIR / "RESULTS.md").write_text(markdown(results, machine, when))
    print(f"\nWrote {RESULTS_DIR / 'all.json'} and {BENCH_DIR / 'RESULTS.md'}")
    failed = {k: v for k, v in status.items() if v != "ok"}
    if failed:
        raise SystemExit(f"Benchmarks that did not finish: {failed}")


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="run_all")
