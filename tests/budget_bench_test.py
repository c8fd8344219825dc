"""benchmarks/budget_bench.py at dummy size: each case compiles in its own process (with emulated devices for FSDP)
and XLA's per-device memory and FLOPs come back; FSDP over two devices halves what each device holds."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

from openpi.shared import errors

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "budget_bench.py"


def _bench():
    spec = importlib.util.spec_from_file_location("budget_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_toy_cases_compile_per_device_and_fsdp_splits_the_state():
    bench = _bench()
    results = bench.main(bench.Args(toy=True, save_results=False))
    rows = {r["case"]: r for r in results["cases"]}
    assert set(rows) == set(bench.TOY_CASES)
    for row in rows.values():
        assert "error" not in row, row
        assert row["flops_per_step_per_device"] > 0 and row["predicted_h100_step_s"] > 0
        parts = row["arguments_gib"] + row["outputs_gib"] + row["temporaries_gib"] - row["aliased_gib"]
        assert row["peak_estimate_gib"] == pytest.approx(parts)
        assert set(row["fits"]) == {"24GB", "40GB", "80GB"}
    alone, split = rows["toy_policy_b2"], rows["toy_policy_b2_fsdp2"]
    assert split["devices"] == 2 and split["params"] == alone["params"]
    # Large weights and their optimizer state are split over the two devices; the batch too.
    assert split["arguments_gib"] < 0.75 * alone["arguments_gib"]
    assert split["flops_per_step_per_device"] < alone["flops_per_step_per_device"]
    assert rows["toy_value_b2"]["trainable_params"] <= rows["toy_value_b2"]["params"]
    assert "toy_policy_b2_fsdp2" in bench.table(results["cases"])


def test_an_unknown_case_is_a_user_error():
    bench = _bench()
    with pytest.raises(errors.UserError, match="Unknown budget case"):
        bench.main(bench.Args(cases=("lora_b5",), save_results=False))
