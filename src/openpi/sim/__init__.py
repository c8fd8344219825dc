"""Simulated environments for closing the RECAP loop: a policy acts, a scripted operator corrects, success is measured.

`make_env(env_name, task)` builds an env implementing `base.SimEnv`; `expert.ScriptedExpert` produces
demonstrations of a chosen quality and `operator.Operator` is the deterministic takeover rule that stands in
for a human during collection.
"""

from openpi.sim.base import SimEnv
from openpi.sim.base import SimError
from openpi.sim.registry import env_names
from openpi.sim.registry import make_env
from openpi.sim.registry import task_names

__all__ = ["SimEnv", "SimError", "env_names", "make_env", "task_names"]
