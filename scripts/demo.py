"""The whole RECAP loop on the embedded synthetic YAM data, on a laptop, in minutes.

    bash scripts/demo.sh                 # installs, then runs this
    uv run scripts/demo.py --out /tmp/demo --policy-steps 100

Every stage runs the same command a user runs on a real dataset (printed before it starts), only with the
dummy-size `demo_*` configs and a tiny tokenizer trained on the spot (no weights can be downloaded here):

    1  write the synthetic dataset                 scripts/make_demo_dataset.py
    2  norm stats from the parquet columns          scripts/compute_norm_stats.py
    3  pi0.6 fine-tune (indicator in the prompt)    scripts/train.py demo_pi06
    4  value model on value_label                   scripts/compute_norm_stats.py + train_value.py value_demo
    5  relabel adv_ind with the value model         scripts/label_advantage_from_vlm.py
    6  pi0.6 fine-tune on the relabelled data       scripts/train.py demo_pi06_recap (from stage 3's weights)
    7  serve the checkpoint, query it with our client, print a summary

Artefacts (datasets, checkpoints, the relabelling report and its PNGs) land under `--out`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Args:
    out: pathlib.Path = pathlib.Path("demo_output")
    """Where every artefact goes (datasets, checkpoints, reports, logs)."""
    num_episodes: int = 24
    """Episodes in the synthetic dataset."""
    policy_steps: int | None = None
    """Train steps of each pi0.6 fine-tune (stages 3 and 6); default the demo configs' own."""
    value_steps: int | None = None
    """Train steps of the value model (stage 4); default the value_demo config's own."""
    top_percent: float = 30.0
    """Share of each task's autonomous frames labelled positive (stage 5)."""
    requests: int = 20
    """Requests sent to the served policy (stage 7)."""
    from_stage: int = 1
    """Skip the stages before this one (their artefacts must already be under --out)."""


@dataclasses.dataclass
class Stage:
    number: int
    title: str
    seconds: float = 0.0
    summary: dict = dataclasses.field(default_factory=dict)


def _python() -> list[str]:
    return [sys.executable]


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Runner:
    """Runs the stage commands, echoing them, teeing their output to a log, and timing them."""

    def __init__(self, out: pathlib.Path, env: dict[str, str]):
        self.out = out
        self.env = env
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.stages: list[Stage] = []

    def stage(self, number: int, title: str) -> Stage:
        stage = Stage(number, title)
        self.stages.append(stage)
        print(f"\n[{number}/7] {title}", flush=True)
        return stage

    def run(self, stage: Stage, cmd: list[str], log_name: str) -> str:
        shown = " ".join(shlex.quote(str(c)) for c in cmd[1:])
        print(f"      $ uv run {shown}", flush=True)
        log_path = self.logs / f"{log_name}.log"
        start = time.perf_counter()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [str(c) for c in cmd], cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, bufsize=1,
            )  # fmt: skip
            assert proc.stdout is not None
            last_bar = 0.0
            for line in proc.stdout:  # text mode turns a progress bar's \r redraws into lines
                log.write(line)
                text = line.strip()
                is_bar = "%|" in text
                if not text or (is_bar and time.monotonic() - last_bar < 5.0 and "100%|" not in text):
                    continue  # show a progress bar at most every 5 s
                last_bar = time.monotonic() if is_bar else last_bar
                print(f"      {text[:160]}", flush=True)
            proc.wait()
        stage.seconds += time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"Stage {stage.number} ({stage.title}) failed with exit code {proc.returncode}; "
                             f"see {log_path}.")  # fmt: skip
        return log_path.read_text()


def _last_metric(log: str, name: str) -> float | None:
    values = re.findall(rf"\b{name}=([-+0-9.eE]+)", log)
    return float(values[-1]) if values else None


def _first_metric(log: str, name: str) -> float | None:
    values = re.findall(rf"\b{name}=([-+0-9.eE]+)", log)
    return float(values[0]) if values else None


def _latest_step_dir(run_dir: pathlib.Path) -> pathlib.Path:
    steps = sorted((int(p.name), p) for p in run_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not steps:
        raise SystemExit(f"No checkpoint step was written under {run_dir}.")
    return steps[-1][1]


def _query_server(port: int, requests: int, prompt: str) -> dict:
    from openpi.policies import yam_policy
    from openpi_client import websocket_client_policy

    client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
    latencies, server_ms = [], []
    shape = None
    for i in range(requests):
        obs = yam_policy.make_yam_example(np.random.default_rng(i))
        obs["prompt"] = prompt
        obs["adv_ind"] = "positive"
        start = time.perf_counter()
        result = client.infer(obs)
        latencies.append((time.perf_counter() - start) * 1000)
        server_ms.append(result["server_timing"]["infer_ms"])
        shape = tuple(result["actions"].shape)
    client.close()
    return {
        "actions_shape": shape,
        "round_trip_ms_p50": float(np.percentile(latencies, 50)),
        "round_trip_ms_p95": float(np.percentile(latencies, 95)),
        "server_infer_ms_p50": float(np.percentile(server_ms, 50)),
    }


def main(args: Args) -> None:
    from openpi.shared import atomic

    out = atomic.check_output_dir(args.out.resolve())
    out.mkdir(parents=True, exist_ok=True)
    data_home = out / "openpi_data"
    env = dict(os.environ, OPENPI_DATA_HOME=str(data_home), PYTHONUNBUFFERED="1", WANDB_MODE="disabled")
    os.environ["OPENPI_DATA_HOME"] = str(data_home)
    from openpi.shared import testing

    testing.install_toy_tokenizers(data_home)

    dataset = out / "data" / "yam_synthetic"
    relabelled = out / "data" / "yam_synthetic_recap"
    assets = out / "assets"
    checkpoints = out / "checkpoints"
    value_dir = out / "checkpoints" / "value_demo" / "demo"
    py = _python()
    runner = Runner(out, env)
    common_train = [f"--assets-base-dir={assets}", f"--checkpoint-base-dir={checkpoints}", "--exp-name=demo",
                    "--overwrite"]  # fmt: skip
    if args.policy_steps is not None:
        common_train.append(f"--num-train-steps={args.policy_steps}")
    value_flags = [] if args.value_steps is None else [f"--num_train_steps={args.value_steps}"]
    total_start = time.perf_counter()

    if args.from_stage <= 1:
        stage = runner.stage(1, "Synthetic YAM dataset (3 cameras, 14-dim, successes, failures, corrections)")
        runner.run(stage, [*py, "scripts/make_demo_dataset.py", f"--out={dataset}",
                           f"--num-episodes={args.num_episodes}", "--overwrite"], "1_dataset")  # fmt: skip
    if args.from_stage <= 2:
        stage = runner.stage(2, "Norm stats (parquet columns only)")
        # Into the shared <assets>/<asset_id>: demo_pi06 and demo_pi06_recap (same frames) both read it.
        runner.run(stage, [*py, "scripts/compute_norm_stats.py", "demo_pi06", f"--assets-base-dir={assets}",
                           f"--repo-id={dataset}", f"--output-dir={assets / 'yam_synthetic'}"], "2_norm_stats")  # fmt: skip
    if args.from_stage <= 3:
        stage = runner.stage(3, "pi0.6 fine-tune with the advantage indicator (demo_pi06)")
        log = runner.run(stage, [*py, "scripts/train.py", "demo_pi06", f"--data.repo-id={dataset}", *common_train],
                         "3_train_pi06")  # fmt: skip
        stage.summary = {"first_loss": _first_metric(log, "loss"), "last_loss": _last_metric(log, "loss")}
    if args.from_stage <= 4:
        stage = runner.stage(4, "Value model: SigLIP + Gemma3 + 201-bin head (value_demo)")
        # State norm stats of the training episodes, through the same assets code as the policy's.
        runner.run(stage, [*py, "scripts/compute_norm_stats.py", "value_demo", f"--assets-base-dir={assets}",
                           f"--repo-id={dataset}"], "4_value_norm_stats")  # fmt: skip
        log = runner.run(stage, [*py, "scripts/train_value.py", "value_demo", f"--data_dir={dataset}",
                                 f"--checkpoint_dir={value_dir}", f"--assets_base_dir={assets}", *value_flags,
                                 "--overwrite"], "4_train_value")  # fmt: skip
        stage.summary = {"val_spearman": _last_metric(log, "val_spearman"), "val_ce": _last_metric(log, "val_ce")}
    if args.from_stage <= 5:
        stage = runner.stage(5, "Relabel adv_ind with the value model (per-task threshold)")
        runner.run(stage, [*py, "scripts/label_advantage_from_vlm.py", f"--data_dir={dataset}",
                           f"--checkpoint_dir={value_dir}", f"--output_dir={relabelled}",
                           f"--top_percent={args.top_percent}", "--overwrite"], "5_relabel")  # fmt: skip
        report = relabelled.parent / f"{relabelled.name}.relabel_report" / "report.json"
        if report.exists():
            stage.summary = {"report": str(report.parent)}
    if args.from_stage <= 6:
        stage = runner.stage(6, "pi0.6 on the relabelled data, from stage 3 (demo_pi06_recap)")
        # As the real `_recap` configs: start from a checkpoint (here the last step stage 3 wrote), not from scratch.
        start_params = _latest_step_dir(checkpoints / "demo_pi06" / "demo") / "params"
        log = runner.run(stage, [*py, "scripts/train.py", "demo_pi06_recap", f"--data.repo-id={relabelled}",
                                 f"--weight-loader.params-path={start_params}", *common_train],
                         "6_train_recap")  # fmt: skip
        stage.summary = {"first_loss": _first_metric(log, "loss"), "last_loss": _last_metric(log, "loss")}

    stage = runner.stage(7, "Serve the RECAP checkpoint and query it with openpi_client")
    step_dir = _latest_step_dir(checkpoints / "demo_pi06_recap" / "demo")
    port = _free_port()
    cmd = [*py, "scripts/serve_policy.py", "policy:checkpoint", "--policy.config=demo_pi06_recap_infer",
           f"--policy.dir={step_dir}", f"--port={port}"]  # fmt: skip
    print(f"      $ uv run {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    server_log = open(runner.logs / "7_serve.log", "w")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=server_log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(port, server, timeout_s=300)
        from openpi.datasets import lerobot

        prompt = lerobot.LeRobotDataset.open(dataset).tasks[0]
        stage.summary = _query_server(port, args.requests, prompt)
    finally:
        server.terminate()
        server.wait(timeout=30)
        server_log.close()
    stage.seconds = time.perf_counter() - start
    _print_summary(runner, out, relabelled, time.perf_counter() - total_start)


def _wait_healthy(port: int, server: subprocess.Popen, timeout_s: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"The policy server exited with code {server.returncode}; see its log.")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"The policy server did not become healthy within {timeout_s:.0f} s.")


def _label_fractions(relabelled: pathlib.Path) -> dict[str, dict[str, float]]:
    from openpi.datasets import lerobot

    ds = lerobot.LeRobotDataset.open(relabelled)
    adv = ds.column("adv_ind").reshape(-1)
    human = ds.column("intervention").reshape(-1) == 1
    task_of_frame = ds.column("task_index").reshape(-1)
    fractions = {}
    for task_index, task in ds.tasks.items():
        auto = (task_of_frame == task_index) & ~human
        if auto.any():
            fractions[task] = {"autonomous_frames": int(auto.sum()),
                               "positive": float(np.mean(adv[auto] == "positive"))}  # fmt: skip
    return fractions


def _print_summary(runner: Runner, out: pathlib.Path, relabelled: pathlib.Path, total_s: float) -> None:
    print("\n" + "=" * 100)
    print(f"RECAP demo finished in {total_s / 60:.1f} min. Artefacts under {out}")
    print("-" * 100)
    for stage in runner.stages:
        details = ", ".join(f"{k}={_fmt(v)}" for k, v in stage.summary.items())
        print(f"  [{stage.number}] {stage.title[:60]:<60} {stage.seconds:7.1f} s  {details}")
    if relabelled.exists():
        print("-" * 100)
        print("  Autonomous frames labelled positive, per task:")
        for task, row in _label_fractions(relabelled).items():
            print(f"    {task:<48} {row['positive']:6.1%} of {row['autonomous_frames']} frames")
        report_dir = relabelled.parent / f"{relabelled.name}.relabel_report"
        pngs = sorted(report_dir.glob("*.png")) if report_dir.exists() else []
        if pngs:
            print(f"  Relabelling report and {len(pngs)} PNGs: {report_dir}")
    print(f"  Logs of every stage: {runner.logs}")
    summary = {s.title: {"seconds": s.seconds, **s.summary} for s in runner.stages}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"  Summary JSON: {out / 'summary.json'}")
    print("=" * 100)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda args: main(cli.parse(Args, args, description=__doc__)), name="demo")
