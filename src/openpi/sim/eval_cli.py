"""`scripts/eval_policy.py`: closed-loop evaluation of a served policy in simulation: success per task with Wilson 95 % intervals.

    # Against a server that is already running (scripts/serve_policy.py):
    uv run scripts/eval_policy.py --port 8000 --adv-ind positive --output-dir sim_output/eval/recap

    # Start the server here (a subprocess on a free port, stopped at the end; its log goes to server.log):
    uv run scripts/eval_policy.py --serve-config sim_pi06_infer \\
        --checkpoint-dir checkpoints/sim_pi06/run/1499 --cfg-beta 1.5 --output-dir sim_output/eval/cfg15

Each task runs `--episodes-per-task` episodes from seeds `--seed`, `--seed + 1`, ... (default 1_000_000,
disjoint from collection seeds, which start at 0; never pick evaluation seeds by their results). Episodes run
in `--num-clients` threads, each with its own env and websocket connection, through the same client runtime a
robot uses. With `--operator` the stand-in human corrects the policy and takeovers per episode are counted
(success then measures the policy plus its corrections). Writes `eval.json` (summary, arguments, every
episode), `eval.png` (success per task with intervals) and prints the table. Python: `evaluate(**overrides)`.
"""

from __future__ import annotations

from collections.abc import Sequence
import contextlib
import dataclasses
import http.client
import io
import json
import logging
import os
import pathlib
import socket
import subprocess
import sys
import time

from openpi.shared import atomic
from openpi.shared import cli as _cli
from openpi.shared import progress as _progress
from openpi.sim import clients
from openpi.sim import metrics
from openpi.sim import rollout

logger = logging.getLogger("openpi.eval_policy")

EVAL_SEED = 1_000_000
# The server this command starts is `scripts/serve_policy.py`'s logic, run as a module (no script path needed).
SERVE_MODULE = "openpi.serving.serve_cli"


@dataclasses.dataclass(frozen=True)
class Args:
    env: str = "tabletop"
    """Simulated env: tabletop (embedded) or metaworld (needs `uv sync --extra sim`)."""
    tasks: tuple[str, ...] = ()
    """Tasks to evaluate (default: every task of the env)."""
    episodes_per_task: int = 67
    """Episodes per task (67 x 3 tasks = 201 episodes)."""
    seed: int = EVAL_SEED
    """Seed of each task's first episode; keep it disjoint from the collection seeds (which start at 0)."""
    host: str = "127.0.0.1"
    """Policy server host (ignored with --serve-config)."""
    port: int = 8000
    """Policy server port (ignored with --serve-config, which picks a free port)."""
    api_key: str | None = None
    """Policy server API key, if it requires one."""
    serve_config: str | None = None
    """Start scripts/serve_policy.py with this config here (with --checkpoint-dir or --dummy-weights)."""
    checkpoint_dir: str | None = None
    """Checkpoint step directory to serve (with --serve-config)."""
    dummy_weights: bool = False
    """Serve random weights of --serve-config instead of a checkpoint (smoke tests only)."""
    cfg_beta: float | None = None
    """Classifier-free guidance strength for the server started here (pi0.6; paper 1.5 to 2.5)."""
    tokenizer_path: str | None = None
    """Tokenizer for the server started here (default: the config's)."""
    server_timeout_s: float = 600.0
    """How long the server started here may take to load and warm up."""
    adv_ind: clients.AdvInd | None = None
    """Advantage indicator sent with each request; omit to use the server's default (positive for pi0.6)."""
    operator: bool = False
    """Let the operator correct the policy (counts takeovers per episode)."""
    stall_steps: int = 6
    """Operator: take over when progress gained less than --min-progress over this many steps."""
    min_progress: float = 0.02
    """Operator: progress (env units) the policy must gain over --stall-steps steps."""
    handback_steps: int = 5
    """Operator: steps the expert drives per takeover."""
    replan_steps: int = 5
    """Steps of each predicted action chunk executed before asking the server again."""
    num_clients: int = 2
    """Parallel envs, each with its own websocket connection (in threads)."""
    image_size: int = 32
    """Camera resolution in pixels (the sim configs read 32)."""
    connect_timeout_s: float = 60.0
    """Give up when no policy server answers within this time."""
    output_dir: str | None = None
    """Directory for eval.json, eval.png (and server.log); omit to only print the table."""


class ServerProcess:
    """`scripts/serve_policy.py` as a subprocess on a free port: started, waited for (`/healthz`), stopped."""

    def __init__(self, args: Args, log_path: pathlib.Path):
        self.log_path = log_path
        self.port = _free_port()
        if args.checkpoint_dir is not None:
            policy = [
                "policy:checkpoint",
                f"--policy.config={args.serve_config}",
                f"--policy.dir={args.checkpoint_dir}",
            ]
        else:
            policy = ["policy:dummy", f"--policy.config={args.serve_config}"]
        # Noise per observation: the same checkpoint evaluated twice gives the same episodes, whatever the order
        # in which the parallel clients' requests arrive.
        command = [sys.executable, "-m", SERVE_MODULE, *policy, "--host", "127.0.0.1", "--port", str(self.port),
                   "--noise-per-observation"]  # fmt: skip
        if args.cfg_beta is not None:
            command += ["--cfg-beta", str(args.cfg_beta)]
        if args.tokenizer_path is not None:
            command += ["--tokenizer-path", args.tokenizer_path]
        if args.api_key is not None:
            command += ["--api-key", args.api_key]
        self.command = command
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # noqa: SIM115 (kept open for the server's lifetime)
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise clients.CollectError(
                    f"The policy server exited with status {code} before it was ready ({self.last_log_line()}); "
                    f"see {self.log_path}."
                )
            if _healthy(self.port):
                return
            time.sleep(0.5)
        raise clients.CollectError(
            f"The policy server was not ready within {timeout_s:.0f} s; see {self.log_path} or raise "
            "--server-timeout-s."
        )

    def last_log_line(self) -> str:
        self._log.flush()
        lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip() if lines else "no output"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # serve_policy.py exits cleanly on SIGTERM
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def check_args(args: Args) -> None:
    clients.check_counts(
        episodes_per_task=args.episodes_per_task, replan_steps=args.replan_steps, num_clients=args.num_clients
    )
    if args.seed < 0:
        raise clients.CollectError(f"--seed must be 0 or more, got {args.seed}.")
    if args.serve_config is None:
        for flag, value in (
            ("--checkpoint-dir", args.checkpoint_dir),
            ("--cfg-beta", args.cfg_beta),
            ("--tokenizer-path", args.tokenizer_path),
        ):
            if value is not None:
                raise clients.CollectError(
                    f"{flag} configures the server this script starts; add --serve-config (or set it on your server)."
                )
        if args.dummy_weights:
            raise clients.CollectError("--dummy-weights configures the server this script starts; add --serve-config.")
    elif (args.checkpoint_dir is None) == (not args.dummy_weights):
        raise clients.CollectError(
            "--serve-config needs exactly one of --checkpoint-dir <step dir> and --dummy-weights."
        )


def _episode_record(episode: rollout.Episode) -> dict:
    return {**dataclasses.asdict(rollout.episode_result(episode)), "outcome": episode.outcome}


def plot(summary: dict, path: pathlib.Path, title: str) -> pathlib.Path:
    """Bar chart of success per task (and overall) with Wilson 95 % error bars; Agg canvas, no display."""
    from matplotlib import figure
    from matplotlib.backends import backend_agg

    entries = list(summary["tasks"].items())
    if len(entries) > 1:
        entries.append((metrics.ALL_TASKS, summary["overall"]))
    names = [name for name, _ in entries]
    rates = [s["success_rate"] for _, s in entries]
    below = [s["success_rate"] - s["ci95"][0] for _, s in entries]
    above = [s["ci95"][1] - s["success_rate"] for _, s in entries]
    fig = figure.Figure(figsize=(1.6 * len(entries) + 2.0, 4.0), dpi=100)
    backend_agg.FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(names, rates, yerr=[below, above], capsize=5, color="tab:blue", alpha=0.8)
    for i, (_, s) in enumerate(entries):
        ax.text(i + 0.05, 0.02, f"{s['successes']}/{s['episodes']}", ha="left", color="black")
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel("success rate (95% Wilson CI)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic.write_bytes(path, buffer.getvalue())


def _run_episodes(args: Args, host: str, port: int) -> tuple[list[rollout.Episode], dict]:
    tasks = clients.resolve_tasks(args.env, args.tasks)
    jobs = [(task, args.seed + i) for task in tasks for i in range(args.episodes_per_task)]
    # Fail fast, before starting threads, when nobody answers; the metadata goes into eval.json.
    with contextlib.closing(clients.connect(host, port, args.api_key, args.connect_timeout_s)) as probe:
        metadata = dict(probe.get_server_metadata())

    def make_agent(environment, client):
        agent = rollout.policy_agent_over(client, environment.env.action_dim, args.replan_steps, args.adv_ind)
        if args.operator:
            return rollout.CorrectedAgent(environment, agent, clients.make_operator(args))
        return agent

    episodes = rollout.run_jobs(
        jobs,
        env_name=args.env,
        image_size=args.image_size,
        make_agent=make_agent,
        make_worker_state=lambda: clients.connect(host, port, args.api_key, args.connect_timeout_s),
        close_worker_state=lambda client: client.close(),
        num_workers=args.num_clients,
        keep_frames=False,
        progress=_progress.Progress(len(jobs), "eval", unit="episodes", interval_s=2.0),
    )
    return episodes, metadata


def run(args: Args) -> dict:
    """Evaluates as `args` says; returns ``{"summary", "args", "episodes", "server_metadata", "elapsed_s"}``."""
    check_args(args)
    clients.resolve_tasks(args.env, args.tasks)  # a typo fails before a server is started
    out_dir = pathlib.Path(args.output_dir) if args.output_dir else None
    start = time.monotonic()
    server = None
    try:
        if args.serve_config is not None:
            log_dir = out_dir if out_dir is not None else pathlib.Path(os.environ.get("TMPDIR", "/tmp"))
            server = ServerProcess(args, log_dir / "server.log")
            print(f"eval: started {' '.join(server.command)} (log: {server.log_path})", file=sys.stderr)
            server.wait_ready(args.server_timeout_s)
            host, port = "127.0.0.1", server.port
        else:
            host, port = args.host, args.port
        episodes, metadata = _run_episodes(args, host, port)
    finally:
        if server is not None:
            server.stop()
    summary = metrics.summarize(rollout.episode_result(ep) for ep in episodes)
    result = {
        "summary": summary,
        "args": dataclasses.asdict(args),
        "server_metadata": metadata,
        "episodes": [_episode_record(ep) for ep in episodes],
        "elapsed_s": time.monotonic() - start,
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out_dir / "eval.json", json.dumps(result, indent=2, default=str) + "\n")
        what = args.checkpoint_dir or args.serve_config or f"{host}:{port}"
        plot(
            summary,
            out_dir / "eval.png",
            f"{args.env}: {what} (adv_ind={args.adv_ind or 'server default'}, cfg_beta={args.cfg_beta})",
        )
    return result


def evaluate(args: Args | None = None, **overrides) -> dict:
    """Python entry (e.g. for the RECAP experiment): `evaluate(port=..., adv_ind="positive", output_dir=...)`."""
    return run(dataclasses.replace(args or Args(), **overrides))


def main(argv: Sequence[str] | None = None) -> dict:
    """The script: evaluate, print the table (and write eval.json/png); user errors exit 2 in one line."""

    def evaluate_and_report(args: list[str]) -> dict:
        parsed = _cli.parse(Args, args, prog="eval_policy.py", description=__doc__)
        result = run(parsed)
        print(metrics.format_table({parsed.serve_config or "policy": result["summary"]}))
        if parsed.output_dir:
            print(f"wrote {pathlib.Path(parsed.output_dir) / 'eval.json'} and eval.png")
        return result

    return _cli.run(
        clients.reporting_server_errors(evaluate_and_report), argv, name="openpi.eval_policy", level=logging.WARNING
    )


if __name__ == "__main__":
    main()
