"""The learnability gate in one command: BC (pi0.5, the real model) on clean expert demonstrations of the tabletop
tasks, evaluated closed-loop over the websocket client on held-out layouts (see `openpi.sim.gate`).

    uv run benchmarks/sim_gate_bench.py                              # the gate arm on the evaluation seeds
    uv run benchmarks/sim_gate_bench.py --arms sim_pi05 sim_pi05_gate --validation   # compare arms (validation seeds)
    uv run benchmarks/sim_gate_bench.py --eval-seed 3000000          # an independent re-run on other held-out seeds
    uv run benchmarks/sim_gate_bench.py --toy                        # the plumbing in a minute (never saved)
    uv run benchmarks/sim_gate_bench.py --env metaworld --layouts 300   # MetaWorld push-v3 from state

Writes `<out>/sim_gate.json`; a non-toy run on the evaluation seeds also writes `benchmarks/results/sim_gate.json`
(with the machine), and a validation run `benchmarks/results/sim_gate_validation.json` (the table of what was tried).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import sys
from typing import Literal

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Args:
    arms: tuple[str, ...] | None = None
    """Registered policy configs to train and evaluate (default: sim_pi05, or sim_pi0_metaworld with --env
    metaworld; see `uv run scripts/train.py --help` for the names)."""
    env: Literal["tabletop", "metaworld"] = "tabletop"
    """metaworld: MetaWorld v3 from state (`uv sync --extra sim`), by default its push-v3 task."""
    layouts: int = 600
    """Distinct demonstration layouts, each demonstrated under all three prompts."""
    steps: tuple[int, ...] = ()
    """Train steps per arm (default: each config's own); several values train every config once per value."""
    validation: bool = False
    """Evaluate on the validation seeds (where settings are chosen) instead of the evaluation seeds."""
    eval_seed: int | None = None
    """First evaluation seed (default: 1,000,000, or the validation block 700,000 with --validation)."""
    eval_per_task: int = 67
    tasks: tuple[str, ...] | None = None
    """Tabletop tasks (default all three; `--tasks press_red` is the diagnostic that needs no prompt), or
    MetaWorld tasks (default push-v3)."""
    toy: bool = False
    """A few layouts, steps and episodes: checks the plumbing only (results are never saved)."""
    out: pathlib.Path = pathlib.Path("./sim_output/sim_gate_bench")
    save_results: bool = True


def main(args: Args) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from openpi.sim import experiment
    from openpi.sim import gate

    out = args.out.expanduser().absolute()
    experiment.clean_outputs(out)
    eval_seed = args.eval_seed
    if eval_seed is None:
        eval_seed = gate.VALIDATION_SEED if args.validation else experiment.EVAL_SEED
    metaworld = args.env == "metaworld"
    tasks = args.tasks or (("push-v3",) if metaworld else None)
    arm_names = args.arms or (("sim_pi0_metaworld",) if metaworld else ("sim_pi05",))
    config = gate.GateConfig(
        out_dir=out,
        env=args.env,
        layouts=2 if args.toy else args.layouts,
        eval_seed=eval_seed,
        eval_per_task=1 if args.toy else args.eval_per_task,
        batch_size=8 if args.toy else 32,
        tasks=tasks,
    )
    steps = (2,) if args.toy else args.steps
    arms = (
        [gate.Arm(name=name, config_name=name) for name in arm_names]
        if not steps
        else [
            gate.Arm(
                name=name if len(steps) == 1 else f"{name}_{n}steps", config_name=name, train=(("num_train_steps", n),)
            )
            for name in arm_names
            for n in steps
        ]
    )
    results = gate.run(config, arms)
    print(gate.table(results))
    if not args.toy:
        import run_all

        results["machine"] = run_all.machine_description()
    (out / "sim_gate.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.save_results and not args.toy:
        name = "sim_gate_validation.json" if args.validation else "sim_gate.json"
        if metaworld:
            name = name.replace("sim_gate", "sim_gate_metaworld")
        if args.tasks or metaworld:
            name = name.replace(".json", f"_{'_'.join(tasks)}.json")
        shutil.copyfile(out / "sim_gate.json", RESULTS / name)
        print(f"Wrote {RESULTS / name}")
    return results


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="sim_gate_bench")
