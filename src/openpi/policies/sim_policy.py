"""Robot transforms for the simulated tasks in `openpi.sim` (the embedded tabletop world and MetaWorld).

A simulated client sends what a real one does: `{"images": {camera: HWC uint8}, "state": [state_dim], "prompt"}`.
The cameras map onto the model's camera slots (`top` is the base camera, `wrist` the left wrist camera); model
slots the config lists but the env does not render arrive black with mask False, as for a robot with fewer
cameras. States and actions keep their own small dimension here; `PadStatesAndActions` pads them to the model's
`action_dim` later in the chain, and `SimOutputs` cuts the model's actions back to the env's `action_dim`.
"""

import dataclasses

import numpy as np

from openpi import transforms
from openpi.policies import aloha_policy

# Simulator camera -> model camera slot.
CAMERA_MAP = {"top": "base_0_rgb", "wrist": "left_wrist_0_rgb"}
# Side of the masked black image a state-only pipeline puts in each camera slot (resized by the model transforms).
STATE_ONLY_IMAGE_SIZE = 8
# Side of the tabletop env's square camera images (its default `image_size`); the model resizes any side.
EXAMPLE_IMAGE_SIZE = 32


def dataset_camera(camera: str) -> str:
    """The LeRobot feature that stores a simulator camera (`observation.images.<camera>`)."""
    return f"observation.images.{camera}"


def make_sim_example(
    cameras: tuple[str, ...],
    state_dim: int,
    *,
    rng: np.random.Generator | None = None,
    prompt: str = "press the button",
) -> dict:
    """A random observation as a simulated client sends it (the server's warm-up request for sim configs).

    Built from the data config alone because serving sits below the simulator in the layers and cannot ask an env;
    tests/sim_loop_test.py checks it against every env's own first observation.
    """
    rng = rng or np.random.default_rng(0)
    size = (EXAMPLE_IMAGE_SIZE, EXAMPLE_IMAGE_SIZE, 3)
    return {
        "images": {camera: rng.integers(0, 256, size=size, dtype=np.uint8) for camera in cameras},
        "state": rng.uniform(-1.0, 1.0, size=(state_dim,)).astype(np.float32),
        "prompt": prompt,
    }


@dataclasses.dataclass(frozen=True)
class SimInputs:
    """Simulator observation (and training actions) -> the model's image/image_mask/state/actions keys."""

    # The model's camera slots, in order (Pi0Config.image_keys); () for state-only models.
    model_cameras: tuple[str, ...] = ("base_0_rgb",)
    # For a model that has camera slots fed from a state-only env (the value model must have a camera): every
    # slot gets a black image with mask False. Explicit, so that a camera lost on the way is still an error.
    state_only: bool = False

    def __call__(self, data: dict) -> dict:
        if "state" not in data:
            raise transforms.TransformError(f"A simulator observation needs 'state' but has only {sorted(data)}.")
        images = dict(data.get("images") or {})
        unknown = sorted(set(images) - set(CAMERA_MAP))
        if unknown:
            raise transforms.TransformError(
                f"Unknown simulator cameras {unknown}; expected a subset of {sorted(CAMERA_MAP)}."
            )
        by_slot = {CAMERA_MAP[name]: aloha_policy.to_hwc_uint8(img, name) for name, img in images.items()}
        out_images, out_masks = {}, {}
        if self.state_only and by_slot:
            raise transforms.TransformError(
                f"This pipeline is state-only but the observation has cameras {sorted(images)}; use a camera config."
            )
        if self.state_only:
            blank = np.zeros((STATE_ONLY_IMAGE_SIZE, STATE_ONLY_IMAGE_SIZE, 3), np.uint8)
            for slot in self.model_cameras:
                out_images[slot], out_masks[slot] = blank, np.False_
        elif self.model_cameras:
            if not by_slot:
                raise transforms.TransformError(
                    f"The model reads cameras {list(self.model_cameras)} but the observation has no images."
                )
            blank = np.zeros_like(next(iter(by_slot.values())))
            for slot in self.model_cameras:
                out_images[slot] = by_slot.get(slot, blank)
                out_masks[slot] = np.bool_(slot in by_slot)
        out = {"image": out_images, "image_mask": out_masks, "state": np.asarray(data["state"], np.float32)}
        if "actions" in data:
            out["actions"] = np.asarray(data["actions"], np.float32)
        for key in aloha_policy.PASSTHROUGH_KEYS:
            if key in data:
                out[key] = data[key]
        return out


@dataclasses.dataclass(frozen=True)
class SimOutputs:
    """Model actions [H, action_dim] -> the env's first `action_dim` dims."""

    action_dim: int

    def __call__(self, data: dict) -> dict:
        return {"actions": np.asarray(data["actions"])[..., : self.action_dim].astype(np.float32)}
