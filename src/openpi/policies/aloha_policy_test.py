import numpy as np
import pytest

from openpi import transforms
from openpi.policies import aloha_policy
from openpi.policies import yam_policy


def test_aloha_inputs_map_cameras_and_mask_missing_ones():
    example = aloha_policy.make_aloha_example()
    del example["images"]["cam_right_wrist"]
    example["images"]["cam_low"] = np.zeros((3, 224, 224), np.uint8)
    out = aloha_policy.AlohaInputs(adapt_to_pi=False)(example)
    assert set(out["image"]) == {"base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"}
    assert out["image"]["base_0_rgb"].shape == (224, 224, 3)
    np.testing.assert_array_equal(out["image"]["base_0_rgb"], example["images"]["cam_high"].transpose(1, 2, 0))
    assert out["image_mask"]["left_wrist_0_rgb"] and not out["image_mask"]["right_wrist_0_rgb"]
    assert (out["image"]["right_wrist_0_rgb"] == 0).all()
    np.testing.assert_array_equal(out["state"], example["state"])
    assert out["prompt"] == "do something"


def test_float_chw_images_become_uint8_hwc():
    image = np.full((3, 8, 10), 0.5, np.float32)
    out = aloha_policy.to_hwc_uint8(image, "cam_high")
    assert out.shape == (8, 10, 3) and out.dtype == np.uint8 and out[0, 0, 0] == 127


def test_float_images_within_a_small_tolerance_of_0_1_are_accepted():
    image = np.full((8, 10, 3), 1.0 + 1e-4, np.float32)
    image[0, 0] = -1e-4
    out = aloha_policy.to_hwc_uint8(image, "cam_high")
    assert out[0, 0, 0] == 0 and out[1, 1, 1] == 255


@pytest.mark.parametrize(
    ("image", "seen"),
    [
        (np.full((8, 10, 3), 1e300, np.float64), r"\[1e\+300, 1e\+300\]"),
        (np.full((8, 10, 3), -5.0, np.float32), r"\[-5, -5\]"),
        (np.linspace(0, 255, 240, dtype=np.float32).reshape(8, 10, 3), r"\[0, 255\]"),  # the commonest mistake
        (np.where(np.eye(8, 10)[..., None] > 0, np.nan, 0.5).repeat(3, -1), "NaN"),
    ],
)
def test_float_images_outside_0_1_are_refused_not_clipped(image, seen):
    """Issue 20.2: these were clipped (0..255 floats collapsed to 0/255, NaN became 0) and returned actions."""
    with pytest.raises(transforms.TransformError, match=rf"Camera 'cam_left_wrist' .*{seen}.*astype\(np.uint8\)"):
        aloha_policy.to_hwc_uint8(image, "cam_left_wrist")


def test_non_uint8_integer_images_are_refused():
    with pytest.raises(transforms.TransformError, match=r"Camera 'cam_high' has dtype int16; send uint8"):
        aloha_policy.to_hwc_uint8(np.full((8, 10, 3), 300, np.int16), "cam_high")


def test_bad_inputs_say_what_is_wrong():
    example = aloha_policy.make_aloha_example()
    with pytest.raises(transforms.TransformError, match="cam_top"):
        aloha_policy.AlohaInputs()({**example, "images": {"cam_top": example["images"]["cam_high"]}})
    with pytest.raises(transforms.TransformError, match="14 dims"):
        aloha_policy.AlohaInputs()({**example, "state": np.zeros(7)})


def test_adapt_to_pi_roundtrips_actions():
    rng = np.random.default_rng(0)
    robot_actions = rng.uniform(0.1, 0.9, size=(5, 14)).astype(np.float32)
    model_actions = aloha_policy.encode_actions_inv(robot_actions, adapt_to_pi=True)
    assert not np.allclose(model_actions, robot_actions)
    np.testing.assert_allclose(model_actions[:, 1], -robot_actions[:, 1], rtol=1e-6)
    back = aloha_policy.AlohaOutputs(adapt_to_pi=True)({"actions": np.pad(model_actions, ((0, 0), (0, 18)))})
    np.testing.assert_allclose(back["actions"], robot_actions, atol=1e-5)
    # Mid-range linear gripper: 0.03822 m -> arcsin(0.3858) = 0.3961 rad -> (0.3961 - 0.5476) / 1.082.
    state = aloha_policy.decode_state(np.full(14, 0.5, np.float32), adapt_to_pi=True)
    np.testing.assert_allclose(state[[6, 13]], -0.1400, atol=2e-4)
    assert state[1] == -0.5 and state[0] == 0.5


def test_yam_passes_units_and_indicator_through_and_keeps_14_dims():
    example = yam_policy.make_yam_example()
    example["actions"] = np.ones((4, 14), np.float32)
    out = yam_policy.YamInputs()(example)
    np.testing.assert_array_equal(out["state"], example["state"])
    np.testing.assert_array_equal(out["actions"], example["actions"])
    assert out["adv_ind"] == "positive"
    actions = yam_policy.YamOutputs()({"actions": np.arange(50 * 32, dtype=np.float32).reshape(50, 32)})["actions"]
    assert actions.shape == (50, 14) and actions[0, 13] == 13
