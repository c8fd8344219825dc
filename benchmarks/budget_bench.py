"""The full-size budget on paper: XLA's compiled memory and FLOPs of one train step, per device, from shapes alone.

Why: "LoRA runs on one 24 GB GPU" and "a full fine-tune needs 80 GB" are claims users plan clusters by, and no GPU
has been lent to check them. The jitted train step of each case is lowered and compiled on the CPU backend from
`jax.ShapeDtypeStruct`s (nothing is allocated), each case in a fresh process (`--devices` emulated CPU devices where
the case shards the state with FSDP), and XLA's own analyses are recorded:

* memory (`compiled.memory_analysis()`, per device): arguments (parameters, optimizer state, batch), outputs,
  temporaries (activations, gradients, workspace), minus what donated outputs alias; ``peak_estimate_gib`` =
  arguments + outputs + temporaries - aliased;
* FLOPs per step per device: the matmuls and convolutions of the step's jaxpr, each scanned body counted once per
  iteration (`openpi.shared.flops.jaxpr_flops`), and the step time they predict on an H100 at 40 % MFU. XLA's own count
  (`compiled.cost_analysis()`, kept as ``xla_flops_per_step_per_device``) visits a scanned layer stack's body
  once, so it undercounts a model whose 18 or 27 layers are one `nn.scan` by about that factor;
* the child's peak host RSS while compiling.

How far to trust it on a GPU: the CPU backend computes bf16 matmuls in float32, so its temporaries hold f32 copies of
bf16 operands that a GPU does not make (the figures are pessimistic by up to the bf16 weights' size), and its
scheduler, fusion and rematerialisation differ from XLA:GPU's; the arguments (weights, optimizer state) are exact.

    uv run benchmarks/budget_bench.py                          # every full-size case -> benchmarks/results/budget_bench.json
    uv run benchmarks/budget_bench.py --cases lora_b4 value_b32
    uv run benchmarks/budget_bench.py --toy                    # the dummy-size cases (what the test runs; not saved)
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import resource
import subprocess
import sys
import time
from typing import Literal

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "budget_bench.json"
H100_PEAK_BF16_FLOPS = 989e12  # dense bf16, H100 SXM datasheet
PREDICTED_MFU = 0.4
GPU_MEMORY_GB = (24, 40, 80)
# A GPU's usable memory is less than its label: CUDA context and the allocator's fragmentation (JAX preallocates 75 %
# by default; XLA_PYTHON_CLIENT_MEM_FRACTION raises it). A case "fits" when its estimate is below 90 % of the label.
USABLE_FRACTION = 0.9


@dataclasses.dataclass(frozen=True)
class Case:
    kind: Literal["policy", "value"]
    config: str
    batch_size: int
    devices: int = 1
    """Emulated devices; the state is sharded FSDP over all of them (figures are per device)."""


CASES = {
    "full_b56": Case("policy", "pi06_yam_vial_30fps", 56),
    "lora_b1": Case("policy", "pi06_yam_vial_30fps_lora", 1),
    "lora_b4": Case("policy", "pi06_yam_vial_30fps_lora", 4),
    "lora_b32": Case("policy", "pi06_yam_vial_30fps_lora", 32),
    "value_b32": Case("value", "value_yam_vial_30fps", 32),
    "full_b56_fsdp8": Case("policy", "pi06_yam_vial_30fps", 56, devices=8),
    "lora_b32_fsdp8": Case("policy", "pi06_yam_vial_30fps_lora", 32, devices=8),
}
TOY_CASES = {
    "toy_policy_b2": Case("policy", "debug_pi06", 2),
    "toy_policy_b2_fsdp2": Case("policy", "debug_pi06", 2, devices=2),
    "toy_value_b2": Case("value", "value_sim", 2),
}


@dataclasses.dataclass(frozen=True)
class Args:
    cases: tuple[str, ...] = tuple(CASES)
    """Which cases to compile (each in a fresh process): any of the full-size names, or of the toy ones."""
    toy: bool = False
    """The dummy-size cases instead (minutes -> seconds; never saved)."""
    child: str | None = None
    """Internal: compile this one case in this process and print its RESULT line."""
    save_results: bool = True


def _trainer_and_batch(case: Case):
    """The case's `Trainer` and its batch as shapes, through the same spec helpers the data loaders' items follow."""
    if case.kind == "policy":
        from openpi.training import config as _config
        from openpi.training import data_loader as _data_loader
        from openpi.training import trainer as _trainer

        base = _config.get_config(case.config)
        cfg = dataclasses.replace(base, data=_config.FakeDataConfig(), batch_size=case.batch_size)
        return _trainer.policy_trainer(cfg), _data_loader.batch_spec(cfg.model, case.batch_size)
    from openpi.training import value_config
    from openpi.training import value_data
    from openpi.training import value_train

    cfg = dataclasses.replace(value_config.get_config(case.config), batch_size=case.batch_size)
    return value_train.value_trainer(cfg), value_data.batch_spec(cfg.model, case.batch_size)


def compile_case(name: str, case: Case) -> dict:
    """Lowers and compiles `case`'s train step as the trainer jits it (FSDP state, data-parallel batch); per-device
    figures from XLA's analyses."""
    import jax

    from openpi.shared import flops as _flops
    from openpi.training import sharding as _sharding
    from openpi.training import utils as _utils

    if jax.device_count() != case.devices:
        raise RuntimeError(f"case {name} needs {case.devices} devices, this process has {jax.device_count()}")
    trainer, batch = _trainer_and_batch(case)
    mesh = _sharding.make_mesh(case.devices)
    state = jax.eval_shape(trainer.init, jax.random.key(0))
    state_sharding = _sharding.fsdp_sharding(state, mesh)
    replicated = _sharding.replicated(mesh)
    step = jax.jit(
        trainer.step,
        in_shardings=(replicated, state_sharding, _sharding.data_sharding(mesh)),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(1,),
    )
    traced = step.trace(jax.random.key(0), state, batch)  # one trace: its jaxpr for the FLOPs, its lowering to compile
    flops = _flops.jaxpr_flops(traced.jaxpr) / case.devices
    start = time.perf_counter()
    compiled = traced.lower().compile()
    compile_s = time.perf_counter() - start
    m = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    xla_flops = float((cost or {}).get("flops", 0.0))
    gib = 2.0**30
    trainable, _ = _utils.split_params(state.params, trainer.is_frozen)
    peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return {
        "case": name,
        **dataclasses.asdict(case),
        "params": _utils.count_params(state.params),
        "trainable_params": _utils.count_params(trainable),
        "compile_s": round(compile_s, 1),
        "arguments_gib": m.argument_size_in_bytes / gib,
        "outputs_gib": m.output_size_in_bytes / gib,
        "temporaries_gib": m.temp_size_in_bytes / gib,
        "aliased_gib": m.alias_size_in_bytes / gib,
        "peak_estimate_gib": peak / gib,
        "flops_per_step_per_device": flops,
        "xla_flops_per_step_per_device": xla_flops,
        "predicted_h100_step_s": flops / (PREDICTED_MFU * H100_PEAK_BF16_FLOPS) if flops else None,
        "compile_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def run_child(name: str, case: Case) -> dict:
    """`compile_case` in a fresh process with `case.devices` emulated CPU devices (the flag must precede JAX)."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={case.devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name], env=env, capture_output=True, text=True, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"case": name, **dataclasses.asdict(case), "error": f"exit {proc.returncode}: {tail[0][:300]}"}
    return json.loads(lines[-1][len("RESULT ") :])


def fits(row: dict) -> dict[str, bool]:
    """Per GPU size: does the per-device estimate stay under the usable share of its memory."""
    need = row["peak_estimate_gib"] * 2**30 / 1e9
    return {f"{gb}GB": need <= USABLE_FRACTION * gb for gb in GPU_MEMORY_GB}


def table(rows: list[dict]) -> str:
    head = f"{'case':18s} {'dev':>3s} {'batch':>5s} {'args':>7s} {'temp':>7s} {'peak':>7s} {'TFLOP':>7s} {'H100 s':>7s}  fits"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:18s} error: {r['error']}")
            continue
        ok = " ".join(k for k, v in fits(r).items() if v) or "none"
        step = r["predicted_h100_step_s"]
        lines.append(
            f"{r['case']:18s} {r['devices']:3d} {r['batch_size']:5d} {r['arguments_gib']:7.1f} {r['temporaries_gib']:7.1f} "
            f"{r['peak_estimate_gib']:7.1f} {r['flops_per_step_per_device'] / 1e12:7.2f} "
            f"{step if step is None else round(step, 3)!s:>7s}  {ok}"
        )
    lines.append("GiB per device; peak = arguments + outputs + temporaries - aliased; fits: <= 90 % of the label (GB).")
    return "\n".join(lines)


def main(args: Args) -> dict | None:
    known = {**CASES, **TOY_CASES}
    if args.child is not None:
        if args.child not in known:
            raise SystemExit(f"unknown case {args.child!r}")
        print("RESULT " + json.dumps(compile_case(args.child, known[args.child])), flush=True)
        return None
    names = tuple(TOY_CASES) if args.toy else args.cases
    unknown = [n for n in names if n not in known]
    if unknown:
        from openpi.shared import errors

        raise errors.UserError(f"Unknown budget case(s) {unknown}; choose from {sorted(known)}.")
    rows = []
    for name in names:
        rows.append(run_child(name, known[name]))
        print(table(rows[-1:]).splitlines()[-2], flush=True)
    for row in rows:
        if "error" not in row:
            row["fits"] = fits(row)
    print(table(rows))
    results = {
        "method": "XLA CPU compile from shapes (memory_analysis, cost_analysis), one fresh process per case",
        "h100_peak_bf16_flops": H100_PEAK_BF16_FLOPS,
        "predicted_mfu": PREDICTED_MFU,
        "cases": rows,
    }
    if args.save_results and not args.toy:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import run_all

        results["machine"] = run_all.machine_description()
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        tmp = RESULTS.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(RESULTS)
        print(f"Wrote {RESULTS}")
    return results


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="budget_bench")
