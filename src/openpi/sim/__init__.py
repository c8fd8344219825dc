"""Simulated environments for closing the RECAP loop: a policy acts, a scripted operator corrects, success is measured.

`make_env(env_name, task)` builds an env implementing `base.SimEnv`; `expert.ScriptedExpert` produces
demonstrations of a chosen quality and `operator.Operator` is the deterministic takeover rule that stands in
for a human during collection.

`serve` (the server with the sim warm-up example) merged into `openpi.serving.serve_cli`, which now takes the example
from the data config; its old path here fails with one sentence naming the new home.
"""

from openpi.shared import moved as _moved
from openpi.sim.base import SimEnv
from openpi.sim.base import SimError
from openpi.sim.registry import env_names
from openpi.sim.registry import make_env
from openpi.sim.registry import task_names

__all__ = ["SimEnv", "SimError", "env_names", "make_env", "task_names"]

__getattr__ = _moved.install(__name__, {"serve": "openpi.serving.serve_cli"})
