"""Robot transforms (`yam_policy`, `aloha_policy`, `sim_policy`), `Policy` and `policy_config`.

`probe` moved to `openpi.sim.probe` (it reads training checkpoints and rebuilds sim layouts, both above this layer);
its old path here fails with one sentence naming the new home.
"""

from openpi.shared import moved as _moved

__getattr__ = _moved.install(__name__, {"probe": "openpi.sim.probe"})
