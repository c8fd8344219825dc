"""YAM bimanual robot transforms.

YAM clients and datasets use the ALOHA layout (head camera as cam_high, two wrist cameras, 14-dim state of
6 joints + gripper per arm) but already record joints and grippers in the units the policy is trained on,
so nothing is flipped or rescaled (`adapt_to_pi=False`). Clients of the RECAP forks also send
`"adv_ind": "positive"`, which passes through to the prompt tokenizer.
"""

import dataclasses

import numpy as np

from openpi.policies import aloha_policy

# LeRobot feature names written by the YAM recorder and by openpi.datasets.synthetic.
DATASET_CAMERAS = {
    "cam_high": "observation.images.head_camera",
    "cam_left_wrist": "observation.images.left_wrist_camera",
    "cam_right_wrist": "observation.images.right_wrist_camera",
}


@dataclasses.dataclass(frozen=True)
class YamInputs:
    """YAM observation -> model inputs (ALOHA layout, no unit conversion)."""

    def __call__(self, data: dict) -> dict:
        return aloha_policy.AlohaInputs(adapt_to_pi=False)(data)


@dataclasses.dataclass(frozen=True)
class YamOutputs:
    """Model actions -> the 14 YAM joint/gripper targets."""

    def __call__(self, data: dict) -> dict:
        return aloha_policy.AlohaOutputs(adapt_to_pi=False)(data)


def make_yam_example(rng: np.random.Generator | None = None, *, adv_ind: str | None = "positive") -> dict:
    """A random observation as a YAM robot client sends it."""
    example = aloha_policy.make_aloha_example(rng)
    example["prompt"] = "pick up the vial and place it in the rack"
    if adv_ind is not None:
        example["adv_ind"] = adv_ind
    return example
