"""One rule for an `adv_ind` value, applied alike by the dataset check and by the server (issue 29.5).

The server accepted "None" (and served unconditionally) and "POSITIVE" while the dataset check refused both.
Here each spelling goes through both real paths: a LeRobot dataset written with that value, checked as policy
training checks it, and a request to a served dummy pi0.6 policy; the two must accept or refuse it together.
"""

import dataclasses

import numpy as np
import pytest

from openpi.datasets import lerobot
from openpi.datasets import recap_columns
from openpi.policies import policy_config
from openpi.policies import yam_policy
from openpi.recap import vocab
from openpi.serving import websocket_policy_server as _server
from openpi.shared import errors
from openpi.training import config as _config
from openpi_client import websocket_client_policy

SPELLINGS = ["positive", "negative", "none", "None", "POSITIVE", " positive", "positive\n", "", "nan", "1", "true"]


@pytest.fixture(scope="module")
def policy(tiny_spm_model):
    config = dataclasses.replace(_config.get_config("debug_pi06_infer"), tokenizer_path=str(tiny_spm_model))
    return policy_config.create_dummy_policy(config, sample_kwargs={"num_steps": 1})


def _dataset_accepts(root, value: str) -> bool:
    features = {
        "action": {"dtype": "float32", "shape": [2], "names": None},
        vocab.ADV_IND: dict(recap_columns.RECAP_FEATURES[vocab.ADV_IND]),
    }
    writer = lerobot.LeRobotDatasetWriter.create(root, fps=5, features=features, use_videos=False)
    writer.add_episode({"action": np.zeros((2, 2), np.float32), vocab.ADV_IND: np.array([value, value])}, "task")
    ds = writer.finalize()
    try:
        recap_columns.check_indicator_column(ds)
    except errors.DatasetError:
        return False
    return True


def _server_accepts(policy, value: str) -> bool:
    obs = yam_policy.make_yam_example(np.random.default_rng(0), adv_ind=value)
    try:
        policy.infer(obs)
    except errors.UserError as e:
        assert "'adv_ind'" in str(e), e
        return False
    return True


@pytest.mark.parametrize("value", SPELLINGS)
def test_the_dataset_check_and_the_server_agree(tmp_path, policy, value):
    expected = vocab.is_indicator(value)
    assert expected == (value in vocab.ADV_IND_VALUES)
    assert _dataset_accepts(tmp_path / "ds", value) == expected
    assert _server_accepts(policy, value) == expected


def test_a_pi05_server_says_it_ignores_the_indicator(tiny_spm_model):
    """Issue 29.5: a pi0.5 server served `adv_ind` requests as if it had used the indicator, without a word."""
    config = dataclasses.replace(_config.get_config("demo_pi05"), tokenizer_path=str(tiny_spm_model))
    policy = policy_config.create_dummy_policy(config, sample_kwargs={"num_steps": 1})
    server = _server.WebsocketPolicyServer(policy, port=0, metadata=policy.metadata)
    noise = np.random.default_rng(1).normal(size=(config.model.action_horizon, config.model.action_dim))
    with server.start_in_thread() as background:
        client = websocket_client_policy.WebsocketClientPolicy(port=background.port)
        assert client.get_server_metadata()["conditions_on_adv_ind"] is False
        plain = yam_policy.make_yam_example(np.random.default_rng(0), adv_ind=None)
        reply = client.infer({**plain, vocab.ADV_IND: "negative"})
        assert reply["adv_ind_ignored"] is True
        assert "adv_ind_ignored" not in client.infer(plain)
        client.close()
    # Ignored means ignored: the same noise gives the same actions with and without the indicator.
    without = policy.infer(plain, noise=noise)["actions"]
    for value in vocab.ADV_IND_VALUES:
        np.testing.assert_array_equal(policy.infer({**plain, vocab.ADV_IND: value}, noise=noise)["actions"], without)


def test_a_pi06_server_says_it_conditions_on_the_indicator(policy):
    assert policy.metadata["conditions_on_adv_ind"] is True
    assert "adv_ind_ignored" not in policy.infer(yam_policy.make_yam_example(np.random.default_rng(0)))
