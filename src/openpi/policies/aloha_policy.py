"""ALOHA-style bimanual robot transforms (also used by YAM, which shares the camera and state layout).

Inputs: an `images` dict of CHW (or HWC) images keyed cam_high / cam_left_wrist / cam_right_wrist, a
14-dim `state` (per arm: 6 joints then the gripper) and, in training, `actions` [H, 14]. Outputs keep the
first 14 action dims. `adapt_to_pi` converts between the ALOHA runtime's joint signs and gripper units and
the ones pi0's base checkpoints were trained with; robots whose data is already in model units (YAM) set it
False.
"""

from collections.abc import Sequence
import dataclasses
from typing import Any
from typing import ClassVar

import numpy as np

from openpi import transforms
from openpi.recap import vocab

STATE_DIM = 14
GRIPPER_DIMS = (6, 13)
# Model camera name for each robot camera; cam_low exists on ALOHA but pi0 does not use it.
CAMERA_MAP = {
    "cam_high": "base_0_rgb",
    "cam_left_wrist": "left_wrist_0_rgb",
    "cam_right_wrist": "right_wrist_0_rgb",
}
KNOWN_CAMERAS = (*CAMERA_MAP, "cam_low")
_JOINT_FLIP = np.array([1, -1, -1, 1, 1, 1, 1] * 2, dtype=np.float32)


def _normalize(x, lo, hi):
    return (x - lo) / (hi - lo)


def _unnormalize(x, lo, hi):
    return x * (hi - lo) + lo


def gripper_to_angular(value: np.ndarray) -> np.ndarray:
    """ALOHA's linear gripper position (normalised) -> pi0's normalised angular gripper position."""
    linear = _unnormalize(value, 0.01844, 0.05800)
    arm_length, horn_radius = 0.036, 0.022  # Interbotix linkage
    cos_like = (horn_radius**2 + linear**2 - arm_length**2) / (2 * horn_radius * linear)
    return _normalize(np.arcsin(np.clip(cos_like, -1.0, 1.0)), 0.5476, 1.6296)


def gripper_from_angular(value: np.ndarray) -> np.ndarray:
    """pi0's gripper output -> the ALOHA runtime's gripper command range."""
    return _normalize(value + 0.5476, -0.6213, 1.4910)


def gripper_from_angular_inv(value: np.ndarray) -> np.ndarray:
    """Exact inverse of `gripper_from_angular`, used on training actions."""
    return _unnormalize(value, -0.6213, 1.4910) - 0.5476


def _check_dims(x: np.ndarray, name: str) -> None:
    if x.shape[-1] != STATE_DIM:
        raise transforms.TransformError(
            f"{name} must have {STATE_DIM} dims (per arm 6 joints + gripper) but has shape {x.shape}; "
            "check the dataset's feature or the client's observation."
        )


def decode_state(state: np.ndarray, *, adapt_to_pi: bool) -> np.ndarray:
    state = np.asarray(state, dtype=np.float32)
    _check_dims(state, "state")
    if adapt_to_pi:
        state = state * _JOINT_FLIP
        state[..., GRIPPER_DIMS] = gripper_to_angular(state[..., GRIPPER_DIMS])
    return state


def encode_actions(actions: np.ndarray, *, adapt_to_pi: bool) -> np.ndarray:
    """Model actions -> robot actions."""
    actions = np.asarray(actions, dtype=np.float32)
    if adapt_to_pi:
        actions = actions * _JOINT_FLIP
        actions[..., GRIPPER_DIMS] = gripper_from_angular(actions[..., GRIPPER_DIMS])
    return actions


def encode_actions_inv(actions: np.ndarray, *, adapt_to_pi: bool) -> np.ndarray:
    """Robot actions (training data) -> model actions; inverse of `encode_actions`."""
    actions = np.asarray(actions, dtype=np.float32)
    _check_dims(actions, "actions")
    if adapt_to_pi:
        actions = actions * _JOINT_FLIP
        actions[..., GRIPPER_DIMS] = gripper_from_angular_inv(actions[..., GRIPPER_DIMS])
    return actions


# How far outside [0, 1] a float image may stray (resampling overshoot, rounding) before it is refused.
FLOAT_IMAGE_TOLERANCE = 1e-3


def to_hwc_uint8(image: Any, name: str) -> np.ndarray:
    """Accepts CHW or HWC, uint8 or float in [0, 1] (within `FLOAT_IMAGE_TOLERANCE`); returns HWC uint8.

    Anything else is refused rather than clipped or cast: float frames in 0..255 (the commonest client mistake)
    would otherwise collapse to black and white, and NaN to black.
    """
    image = np.asarray(image)
    if image.ndim != 3 or 3 not in (image.shape[0], image.shape[-1]):
        raise transforms.TransformError(
            f"Camera {name!r} must be a 3-channel image (CHW or HWC) but has shape {image.shape}."
        )
    if np.issubdtype(image.dtype, np.floating):
        finite = np.isfinite(image)
        lo, hi = (float(image[finite].min()), float(image[finite].max())) if finite.any() else (np.nan, np.nan)
        if not finite.all() or lo < -FLOAT_IMAGE_TOLERANCE or hi > 1.0 + FLOAT_IMAGE_TOLERANCE:
            nan = f" and {int((~finite).sum())} NaN/inf values" if not finite.all() else ""
            raise transforms.TransformError(
                f"Camera {name!r} is a {image.dtype} image with values in [{lo:g}, {hi:g}]{nan}, but float images "
                "must lie in [0, 1]; send uint8 in 0..255 (for 0..255 floats: image.astype(np.uint8)), or divide "
                "by 255."
            )
        image = (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise transforms.TransformError(
            f"Camera {name!r} has dtype {image.dtype}; send uint8 in 0..255 (image.astype(np.uint8) after checking "
            "the range) or float in [0, 1]."
        )
    if image.shape[0] == 3 and image.shape[-1] != 3:
        image = np.transpose(image, (1, 2, 0))
    return image


# Keys a robot transform carries through untouched for later transforms (prompt, indicator, loss weight).
PASSTHROUGH_KEYS = ("prompt", vocab.ADV_IND, "loss_weight", "sample_id")


def images_to_model(images: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Maps robot cameras to model cameras; a missing camera becomes black with its mask False."""
    unknown = sorted(set(images) - set(KNOWN_CAMERAS))
    if unknown:
        raise transforms.TransformError(
            f"Unknown cameras {unknown}; expected a subset of {list(KNOWN_CAMERAS)} (repack the dataset keys)."
        )
    decoded = {name: to_hwc_uint8(img, name) for name, img in images.items() if name in CAMERA_MAP}
    if "cam_high" not in decoded:
        raise transforms.TransformError(f"The base camera 'cam_high' is required but only {sorted(images)} arrived.")
    base = decoded["cam_high"]
    out_images, out_masks = {}, {}
    for robot_name, model_name in CAMERA_MAP.items():
        if robot_name in decoded:
            out_images[model_name] = decoded[robot_name]
            out_masks[model_name] = np.True_
        else:
            out_images[model_name] = np.zeros_like(base)
            out_masks[model_name] = np.False_
    return out_images, out_masks


@dataclasses.dataclass(frozen=True)
class AlohaInputs:
    """Robot observation (and training actions) -> the model's image/image_mask/state/actions keys."""

    adapt_to_pi: bool = True
    EXPECTED_CAMERAS: ClassVar[Sequence[str]] = tuple(CAMERA_MAP)

    def __call__(self, data: dict) -> dict:
        if "images" not in data or "state" not in data:
            raise transforms.TransformError(
                f"A robot observation needs 'images' and 'state' but has only {transforms.user_keys(data)}."
            )
        images, masks = images_to_model(dict(data["images"]))
        out = {"image": images, "image_mask": masks, "state": decode_state(data["state"], adapt_to_pi=self.adapt_to_pi)}
        if "actions" in data:
            out["actions"] = encode_actions_inv(data["actions"], adapt_to_pi=self.adapt_to_pi)
        for key in PASSTHROUGH_KEYS:
            if key in data:
                out[key] = data[key]
        return out


@dataclasses.dataclass(frozen=True)
class AlohaOutputs:
    """Model actions [H, action_dim] -> the robot's 14 dims."""

    adapt_to_pi: bool = True

    def __call__(self, data: dict) -> dict:
        actions = np.asarray(data["actions"])[..., :STATE_DIM]
        return {"actions": encode_actions(actions, adapt_to_pi=self.adapt_to_pi)}


def make_aloha_example(rng: np.random.Generator | None = None) -> dict:
    """A random observation in the ALOHA client layout (for tests and warm-up requests)."""
    rng = rng or np.random.default_rng(0)
    return {
        "state": rng.uniform(-1, 1, size=STATE_DIM).astype(np.float32),
        "images": {name: rng.integers(0, 256, size=(3, 224, 224), dtype=np.uint8) for name in CAMERA_MAP},
        "prompt": "do something",
    }
