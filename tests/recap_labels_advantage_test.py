"""labels x advantage: with the true value function, every N-step advantage of our labels is zero.

This pins the contract between `openpi.recap.labels` (which writes `reward_label` and `value_label`) and
`openpi.recap.advantage` (which sums `reward_label` over N steps and bootstraps with V): if either side changed
its convention (terminal reward on the last frame, normalisation, clipping), a perfect critic would start
producing non-zero advantages and the relabelled indicators would be noise.
"""

import numpy as np
import pytest

from openpi.recap import advantage
from openpi.recap import labels


@pytest.mark.parametrize("c_fail", [None, 1.01, 3.0, 12.0])
@pytest.mark.parametrize("lookahead", [1, 7, 50])
def test_true_value_gives_zero_advantage(c_fail, lookahead):
    rng = np.random.default_rng(lookahead)
    lengths = rng.integers(2, 45, size=40)
    tasks = [f"task {i % 3}" for i in range(40)]
    success = rng.random(40) < 0.6
    intervention = (rng.random(int(lengths.sum())) < 0.15).astype(np.int64)
    cols = labels.compute_columns(
        episode_lengths=lengths,
        success=success,
        tasks=tasks,
        intervention=intervention,
        config=labels.LabelConfig(c_fail=c_fail),
    )
    ends = np.cumsum(lengths)
    bounds = list(zip((ends - lengths).tolist(), ends.tolist(), strict=True))
    result = advantage.compute(
        reward=cols["reward"],
        reward_label=cols["reward_label"],
        intervention=cols["intervention"],
        task_index=np.repeat([i % 3 for i in range(40)], lengths),
        values=cols["value_label"],
        bounds=bounds,
        config=advantage.AdvantageConfig(lookahead=lookahead),
    )
    np.testing.assert_array_equal(result.success, success)
    scored = np.isfinite(result.advantage)
    assert scored.sum() == (intervention == 0).sum()
    np.testing.assert_allclose(result.advantage[scored], 0.0, atol=1e-6)
