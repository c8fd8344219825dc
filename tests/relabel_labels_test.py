"""openpi.recap.labels -> openpi.recap.advantage: what the label modes write is read the way RECAP.md says."""

import itertools

import numpy as np
import pytest

from openpi.recap import advantage as adv
from openpi.recap import labels


def _columns(config):
    eps = [
        labels.Episode(task="t", success=True, intervention=np.zeros(10, np.int64)),
        labels.Episode(task="t", success=False, intervention=np.zeros(8, np.int64)),
        labels.Episode(task="t", success=False, intervention=np.zeros(12, np.int64)),
    ]
    cols = labels.label_episodes(eps, config)
    flat = {k: np.concatenate([np.asarray(c[k]).reshape(-1) for c in cols]) for k in cols[0]}
    lengths = [10, 8, 12]
    starts = np.concatenate([[0], np.cumsum(lengths)])
    bounds = [(int(a), int(b)) for a, b in itertools.pairwise(starts)]
    return flat, bounds


@pytest.mark.parametrize("c_fail", [None, 4.0])
def test_paper_mode_failure_penalty_is_trusted(c_fail):
    flat, bounds = _columns(labels.LabelConfig(mode="paper", c_fail=c_fail))
    success = adv.episode_success(flat["reward"], bounds)
    np.testing.assert_array_equal(success, [True, False, False])
    fixed = adv.repair_terminal_rewards(flat["reward_label"], success, bounds, failure_reward=-1.0)
    np.testing.assert_array_equal(fixed, flat["reward_label"].astype(np.float32))
    # With the true values (value_label) every advantage is zero: the labels and the estimator agree.
    result = adv.compute(
        reward=flat["reward"],
        reward_label=flat["reward_label"],
        intervention=flat["intervention"],
        task_index=np.zeros(len(flat["reward"]), np.int64),
        values=flat["value_label"],
        bounds=bounds,
        config=adv.AdvantageConfig(lookahead=3),
    )
    np.testing.assert_allclose(result.advantage, 0.0, atol=1e-5)


def test_per_episode_mode_failure_ending_is_repaired():
    flat, bounds = _columns(labels.LabelConfig(mode="per_episode"))
    # The community convention: the last reward of a failed episode is 0 ...
    assert flat["reward_label"][bounds[1][1] - 1] == 0.0
    success = adv.episode_success(flat["reward"], bounds)
    fixed = adv.repair_terminal_rewards(flat["reward_label"], success, bounds, failure_reward=-1.0)
    # ... which the relabeller replaces by a real failure penalty; successes keep their 0.
    assert fixed[bounds[0][1] - 1] == 0.0
    assert fixed[bounds[1][1] - 1] == -1.0 and fixed[bounds[2][1] - 1] == -1.0
    # With the (flat -1) failure values: trusting the raw 0 would give a failed last frame A = 0 + 0 - (-1) = +1,
    # the best score in the dataset; repaired it is -1 + 0 - (-1) = 0, no better than a success, and the frames
    # before it are negative.
    result = adv.compute(
        reward=flat["reward"],
        reward_label=flat["reward_label"],
        intervention=flat["intervention"],
        task_index=np.zeros(len(flat["reward"]), np.int64),
        values=flat["value_label"],
        bounds=bounds,
        config=adv.AdvantageConfig(lookahead=3, top_percent=30),
    )
    for _start, stop in bounds[1:]:
        assert result.advantage[stop - 1] == pytest.approx(0.0, abs=1e-6)
        assert (result.adv_ind[stop - 3 : stop - 1] == "negative").all()
