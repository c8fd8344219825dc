"""Issue 21: the modules that moved to keep the layers one-way fail at their old path with a pointer to the new one,
and the new one imports."""

import importlib
import re

import pytest

from openpi.shared import moved

MOVED = {
    **{f"openpi.recap.{name}": f"openpi.relabel.{name}" for name in (
        "columns", "decode", "inference", "model_loading", "relabel", "relabel_cli", "relabel_config", "report",
        "value_cache",
    )},
    "openpi.recap.convert": "openpi.datasets.convert",
    "openpi.recap.convert_cli": "openpi.datasets.convert_cli",
    "openpi.policies.probe": "openpi.sim.probe",
    "openpi.recap.progress": "openpi.shared.progress",  # issue 29: one progress line for every long job
    "openpi.sim.serve": "openpi.serving.serve_cli",  # issue 31: the data config gives the sim warm-up example
}  # fmt: skip


@pytest.mark.parametrize("old", sorted(MOVED))
def test_the_old_path_points_to_the_new_one(old):
    package, _, name = old.rpartition(".")
    with pytest.raises(moved.MovedError, match=f"^{re.escape(f'{old} moved to {MOVED[old]}; import it from there.')}$"):
        importlib.import_module(old)
    with pytest.raises(moved.MovedError, match=re.escape(MOVED[old])):
        getattr(importlib.import_module(package), name)
    assert importlib.import_module(MOVED[old]).__name__ == MOVED[old]


def test_the_label_maths_stayed():
    for name in ("vocab", "labels", "advantage", "provenance"):
        importlib.import_module(f"openpi.recap.{name}")
