"""`scripts/collect_rollouts.py`, stage 0 of RECAP in simulation: run a served policy (or the scripted expert)
with operator corrections, record it.

    # Expert demonstrations (every frame a human frame):
    uv run scripts/collect_rollouts.py --env tabletop --episodes-per-task 20 --quality 1.0 \\
        --output-dir sim_output/data/demos

    # A mediocre autonomous policy (the expert at quality 0.5) corrected by the operator:
    uv run scripts/collect_rollouts.py --autonomous --quality 0.5 --output-dir sim_output/data/rollouts

    # The policy a server serves (scripts/serve_policy.py), corrected by the operator, asked for "positive":
    uv run scripts/collect_rollouts.py --agent policy --port 8000 --adv-ind positive --seed 100 \\
        --output-dir sim_output/data/iter1

The robot's path is the real one: `Runtime` -> `PolicyAgent` -> `ActionChunkBroker` -> `WebsocketClientPolicy`
-> the server. The operator (`openpi.sim.operator.Operator`) stands in for the human: it takes over when progress
stalls or the proposed action is unsafe, drives with the noise-free expert for `--handback-steps` steps and hands
back; those frames are `intervention = 1`. The result is a LeRobot v3.0 dataset with the five RECAP columns
(`openpi.sim.dataset.write_dataset`), ready for `scripts/train.py sim_pi05|sim_pi06 --data.repo-id=<output-dir>`.

Seeds: episode i of every task starts from `--seed + i`. Evaluation (`scripts/eval_policy.py`) starts at
1_000_000, so collect with seeds below that: evaluation episodes must never be training episodes.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json
import logging
import pathlib
import time
from typing import Literal

import numpy as np

from openpi.shared import atomic
from openpi.shared import cli as _cli
from openpi.shared import progress as _progress
from openpi.sim import clients
from openpi.sim import dataset as sim_dataset
from openpi.sim import expert as _expert
from openpi.sim import metrics
from openpi.sim import rollout

logger = logging.getLogger("openpi.collect_rollouts")


@dataclasses.dataclass(frozen=True)
class Args:
    env: str = "tabletop"
    """Simulated env: tabletop (embedded) or metaworld (needs `uv sync --extra sim`)."""
    tasks: tuple[str, ...] = ()
    """Tasks to collect (default: every task of the env)."""
    episodes_per_task: int = 10
    """Episodes recorded per task."""
    seed: int = 0
    """Seed of each task's first episode (then seed+1, ...); keep below eval_policy.py's 1_000_000."""
    agent: Literal["expert", "policy"] = "expert"
    """Who acts: the scripted expert, or the policy a server serves (--host/--port)."""
    quality: float = 1.0
    """Scripted expert quality in [0, 1] (1: noise-free; 0.5 succeeds about 2/3 of the time)."""
    autonomous: bool = False
    """The expert acts as the autonomous 'mediocre policy': its frames are intervention 0 and it can be corrected."""
    operator: bool = True
    """Let the operator correct autonomous agents (policy, or --autonomous expert); demonstrations ignore it."""
    stall_steps: int = 6
    """Operator: take over when progress gained less than --min-progress over this many steps."""
    min_progress: float = 0.02
    """Operator: progress (env units; tabletop: distance) the agent must gain over --stall-steps steps."""
    handback_steps: int = 5
    """Operator: steps the expert drives per takeover before handing back."""
    host: str = "127.0.0.1"
    """Policy server host (--agent policy)."""
    port: int = 8000
    """Policy server port (--agent policy)."""
    api_key: str | None = None
    """Policy server API key, if it requires one."""
    replan_steps: int = 5
    """Steps of each predicted action chunk executed before asking the server again."""
    adv_ind: clients.AdvInd | None = None
    """Advantage indicator sent with each request (pi0.6 servers); omit to use the server's default (positive)."""
    connect_timeout_s: float = 60.0
    """Give up when no policy server answers within this time."""
    output_dir: str | None = None
    """Dataset root to write (default: the sim config's dataset, sim_output/data/<env>)."""
    overwrite: bool = False
    """Replace an existing dataset at --output-dir."""
    image_size: int = 32
    """Camera resolution in pixels (the sim configs read 32)."""
    summary_json: str | None = None
    """Also write the per-task summary as JSON here (kept outside the dataset, whose layout is LeRobot's)."""


def check_args(args: Args) -> None:
    clients.check_counts(episodes_per_task=args.episodes_per_task, replan_steps=args.replan_steps)
    if args.seed < 0:
        raise clients.CollectError(f"--seed must be 0 or more, got {args.seed}.")
    if args.image_size < 8:
        raise clients.CollectError(f"--image-size must be at least 8 pixels, got {args.image_size}.")
    if args.agent == "policy" and args.autonomous:
        raise clients.CollectError(
            "--autonomous makes the scripted expert act as the policy; drop it with --agent policy."
        )
    if args.agent == "expert" and args.adv_ind is not None:
        raise clients.CollectError("--adv-ind is sent to a policy server; use it with --agent policy.")
    if not 0.0 <= args.quality <= 1.0:
        raise clients.CollectError(f"--quality must be in [0, 1] (1 = noise-free expert), got {args.quality}.")


def default_output(env: str) -> str:
    """Where the sim_* training configs read their dataset by default (so collection writes there). Imported
    here, not at the top: the training configs pull in JAX, which `--help` and flag errors need not wait for."""
    from openpi.training import config as _config

    return {"tabletop": _config.SIM_DATASET, "metaworld": _config.SIM_DATASET + "_metaworld"}.get(
        env, f"sim_output/data/{env}"
    )


def output_root(args: Args) -> pathlib.Path:
    root = pathlib.Path(args.output_dir or default_output(args.env))
    atomic.check_output_dir(root)
    if args.summary_json:
        atomic.check_output_dir(pathlib.Path(args.summary_json).expanduser().absolute().parent)
    if root.exists() and not args.overwrite:
        raise clients.CollectError(
            f"{root} already exists; pass --overwrite to replace it or choose another --output-dir."
        )
    return root


def _corrected(args: Args) -> bool:
    """Whether the operator watches: only autonomous agents are corrected (a demonstration is all human)."""
    return args.operator and (args.agent == "policy" or args.autonomous)


def collect(args: Args) -> tuple[list[rollout.Episode], dict]:
    """Runs the episodes `args` asks for; returns them (task order, then seed order) and the summary dict."""
    check_args(args)
    tasks = clients.resolve_tasks(args.env, args.tasks)
    jobs = [(task, args.seed + i) for task in tasks for i in range(args.episodes_per_task)]
    corrected = _corrected(args)

    if args.agent == "policy":

        def make_state():
            return clients.connect(args.host, args.port, args.api_key, args.connect_timeout_s)

        def close_state(client):
            client.close()

        def base_agent(environment, client):
            return rollout.policy_agent_over(client, environment.env.action_dim, args.replan_steps, args.adv_ind)

    else:

        def make_state():
            return None

        def close_state(client):
            del client

        def base_agent(environment, client):
            expert = _expert.ScriptedExpert(args.quality, environment.seed)
            return rollout.ExpertAgent(environment, expert, human=not args.autonomous)

    def make_agent(environment, state):
        agent = base_agent(environment, state)
        return rollout.CorrectedAgent(environment, agent, clients.make_operator(args)) if corrected else agent

    progress = _progress.Progress(len(jobs), "collect", unit="episodes", interval_s=2.0)
    episodes = rollout.run_jobs(
        jobs,
        env_name=args.env,
        image_size=args.image_size,
        make_agent=make_agent,
        make_worker_state=make_state,
        close_worker_state=close_state,
        progress=progress,
    )
    return episodes, summarize(episodes, tasks, args, time.monotonic() - progress.start)


def summarize(episodes: Sequence[rollout.Episode], tasks: Sequence[str], args: Args, elapsed_s: float) -> dict:
    """Per-task and overall: episodes, success (Wilson CI), mean length, human-frame fraction, takeovers/episode."""
    summary = metrics.summarize(rollout.episode_result(ep) for ep in episodes)

    def mean_length(eps):
        return float(np.mean([ep.length for ep in eps]))

    summary["overall"]["mean_length"] = mean_length(episodes)
    for task in tasks:
        summary["tasks"][task]["mean_length"] = mean_length([ep for ep in episodes if ep.task == task])
    return {
        "summary": summary,
        "args": dataclasses.asdict(args),
        "operator": _corrected(args),
        "frames": int(sum(ep.length for ep in episodes)),
        "elapsed_s": elapsed_s,
    }


def format_summary(summary: dict) -> str:
    header = ("task", "episodes", "success", "95% CI", "mean length", "human frames", "takeovers/ep")
    entries = list(summary["tasks"].items())
    if len(entries) > 1:
        entries.append((metrics.ALL_TASKS, summary["overall"]))
    rows = []
    for task, s in entries:
        low, high = s["ci95"]
        rows.append(
            (
                task,
                str(s["episodes"]),
                f"{100 * s['success_rate']:.1f}% ({s['successes']}/{s['episodes']})",
                f"[{100 * low:.1f}, {100 * high:.1f}]",
                f"{s['mean_length']:.1f}",
                f"{100 * s['human_step_fraction']:.1f}%",
                f"{s['interventions_per_episode']:.2f}",
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def run(args: Args) -> dict:
    """Collects and writes the dataset; returns the collection summary (see `summarize`)."""
    check_args(args)
    root = output_root(args)  # before collecting: an existing dataset must not cost a whole run first
    episodes, result = collect(args)
    env = rollout.make_env(args.env, episodes[0].task, args.image_size)
    dataset = sim_dataset.write_dataset(
        root,
        episodes,
        env,
        image_size=args.image_size if env.cameras else None,
        overwrite=args.overwrite,
    )
    result["dataset"] = str(root)
    if len(dataset) != result["frames"]:
        raise RuntimeError(f"The dataset at {root} holds {len(dataset)} frames, {result['frames']} were recorded.")
    if args.summary_json:
        atomic.write_text(args.summary_json, json.dumps(result, indent=2) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    """The script: collect, write the dataset, print the per-task table; user errors exit 2 in one line."""

    def collect_and_report(args: list[str]) -> dict:
        result = run(_cli.parse(Args, args, prog="collect_rollouts.py", description=__doc__))
        print(format_summary(result["summary"]))
        print(
            f"wrote {result['frames']} frames of {result['summary']['overall']['episodes']} episodes to {result['dataset']}"
        )
        return result

    return _cli.run(
        clients.reporting_server_errors(collect_and_report), argv, name="openpi.collect_rollouts", level=logging.WARNING
    )
