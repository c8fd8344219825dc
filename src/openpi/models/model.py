"""What every policy model consumes: the `Observation` batch, its checks, preprocessing, and `BaseModelConfig`.

The observation layout is openpi's, so openpi transforms, clients and checkpoints work unchanged: three cameras
keyed `base_0_rgb`, `left_wrist_0_rgb`, `right_wrist_0_rgb` at 224 x 224, float images in [-1, 1] (uint8 is
accepted and converted), a per-camera validity mask, the (padded) state, and the tokenised prompt.
"""

import abc
from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
import math
from typing import Any
from typing import Literal

from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

from openpi.shared import errors

IMAGE_KEYS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
IMAGE_RESOLUTION = (224, 224)

# Actions [B, action_horizon, action_dim]; jax or numpy.
Actions = Any
Params = dict[str, Any]


class ObservationError(errors.UserError, ValueError):
    """An observation batch has a missing key or a wrong shape/dtype."""


@struct.dataclass
class Observation:
    """One batch of model inputs. A pytree, so it passes through `jax.jit` and `jax.tree.map`."""

    # Camera name -> [B, H, W, 3] float32 in [-1, 1] (uint8 in [0, 255] is converted by `from_dict`/preprocess).
    images: dict[str, Any]
    # Camera name -> [B] bool: False where the camera is missing (its tokens are masked out).
    image_masks: dict[str, Any]
    # [B, S] robot state (zero-padded to action_dim).
    state: Any
    # [B, L] int32 prompt tokens and [B, L] bool validity; None for models without a prompt.
    tokenized_prompt: Any = None
    tokenized_prompt_mask: Any = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Observation":
        """Builds an observation from openpi's flat keys (`image`, `image_mask`, `state`, `tokenized_prompt`, ...)."""
        for key in ("image", "image_mask", "state"):
            if key not in data:
                raise ObservationError(
                    f"Observation dict lacks key {key!r} (has {sorted(data)}); the model transforms must produce "
                    "`image`, `image_mask` and `state`."
                )
        if ("tokenized_prompt" in data) != ("tokenized_prompt_mask" in data):
            raise ObservationError(
                "Observation dict has only one of `tokenized_prompt` / `tokenized_prompt_mask`; provide both or neither."
            )
        images = {key: _to_float_image(key, img) for key, img in data["image"].items()}
        return cls(
            images=images,
            image_masks=dict(data["image_mask"]),
            state=data["state"],
            tokenized_prompt=data.get("tokenized_prompt"),
            tokenized_prompt_mask=data.get("tokenized_prompt_mask"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The inverse of `from_dict` (openpi's key names)."""
        out: dict[str, Any] = {"image": dict(self.images), "image_mask": dict(self.image_masks), "state": self.state}
        if self.tokenized_prompt is not None:
            out["tokenized_prompt"] = self.tokenized_prompt
            out["tokenized_prompt_mask"] = self.tokenized_prompt_mask
        return out

    @property
    def batch_size(self) -> int:
        return int(self.state.shape[0])


def _to_float_image(key: str, image: Any) -> Any:
    """uint8 [0, 255] -> float32 [-1, 1]; float images pass through unchanged."""
    if image.dtype == np.uint8:
        xp = np if isinstance(image, np.ndarray) else jnp
        return image.astype(xp.float32) / 255.0 * 2.0 - 1.0
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise ObservationError(
            f"Image {key!r} has dtype {image.dtype}; expected uint8 in [0, 255] or float in [-1, 1]."
        )
    return image


def check_observation(
    obs: Observation,
    *,
    image_keys: Sequence[str] = IMAGE_KEYS,
    state_dim: int | None = None,
    max_token_len: int | None = None,
    require_prompt: bool = False,
) -> None:
    """Raises `ObservationError` naming the first field whose shape does not fit the model. Works on traced arrays.

    Images may have any height/width (they are resized with padding); the batch size comes from `state`.
    """
    if getattr(obs.state, "ndim", None) != 2:
        raise ObservationError(
            f"Observation state has shape {getattr(obs.state, 'shape', None)}; expected [batch, state_dim]."
        )
    batch = obs.state.shape[0]
    if state_dim is not None and obs.state.shape[1] != state_dim:
        raise ObservationError(
            f"Observation state has shape {tuple(obs.state.shape)}; expected [{batch}, {state_dim}] "
            "(pad the state to the model's action_dim)."
        )
    for key in image_keys:
        if key not in obs.images:
            raise ObservationError(
                f"Observation lacks camera {key!r} (has {sorted(obs.images)}); send a zero image with mask False "
                "for a missing camera."
            )
        shape = tuple(obs.images[key].shape)
        if len(shape) != 4 or shape[0] != batch or shape[3] != 3:
            raise ObservationError(
                f"Image {key!r} has shape {shape}; expected [{batch}, height, width, 3] "
                f"(e.g. [{batch}, {IMAGE_RESOLUTION[0]}, {IMAGE_RESOLUTION[1]}, 3]), channels last."
            )
        if key in obs.image_masks and tuple(jnp.shape(obs.image_masks[key])) != (batch,):
            raise ObservationError(
                f"Image mask {key!r} has shape {tuple(jnp.shape(obs.image_masks[key]))}; expected [{batch}]."
            )
    if require_prompt and obs.tokenized_prompt is None:
        raise ObservationError("Observation has no tokenized_prompt; run the tokenizer transform before the model.")
    if obs.tokenized_prompt is not None:
        shape = tuple(obs.tokenized_prompt.shape)
        mask_shape = tuple(jnp.shape(obs.tokenized_prompt_mask)) if obs.tokenized_prompt_mask is not None else None
        if len(shape) != 2 or shape[0] != batch or mask_shape != shape:
            raise ObservationError(
                f"tokenized_prompt has shape {shape} and mask shape {mask_shape}; expected both [{batch}, max_len]."
            )
        if max_token_len is not None and shape[1] > max_token_len:
            raise ObservationError(
                f"tokenized_prompt has length {shape[1]} > max_token_len {max_token_len}; raise max_token_len in the "
                "model config or shorten the prompt."
            )


def check_actions(actions: Any, *, batch_size: int, action_horizon: int, action_dim: int) -> None:
    expected = (batch_size, action_horizon, action_dim)
    if tuple(actions.shape) != expected:
        raise ObservationError(
            f"Actions have shape {tuple(actions.shape)}; expected {list(expected)} [batch, action_horizon, action_dim]."
        )


def resize_with_pad(images, height: int, width: int):
    """Resizes [B, h, w, 3] float images in [-1, 1] to [B, height, width, 3] keeping aspect ratio; pads with -1 (black)."""
    cur_h, cur_w = images.shape[1:3]
    if (cur_h, cur_w) == (height, width):
        return images
    ratio = max(cur_w / width, cur_h / height)
    new_h, new_w = int(cur_h / ratio), int(cur_w / ratio)
    resized = jax.image.resize(images, (images.shape[0], new_h, new_w, images.shape[3]), method="bilinear")
    resized = jnp.clip(resized, -1.0, 1.0)
    pad_h, pad_w = height - new_h, width - new_w
    return jnp.pad(
        resized,
        ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
        constant_values=-1.0,
    )


def _warp(image, rng, *, crop_scale: float, max_degrees: float):
    """Random crop (crop_scale of each side), resize back and rotate, as one bilinear affine warp of [H, W, C]."""
    h, w = image.shape[:2]
    offset_rng, angle_rng = jax.random.split(rng)
    # The crop centre may move by at most half the removed margin.
    max_shift = jnp.array([(1 - crop_scale) * h / 2, (1 - crop_scale) * w / 2])
    shift = jax.random.uniform(offset_rng, (2,), minval=-1.0, maxval=1.0) * max_shift
    angle = jax.random.uniform(angle_rng, (), minval=-max_degrees, maxval=max_degrees) * (math.pi / 180)
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    cy, cx = (h - 1) / 2, (w - 1) / 2
    dy, dx = (ys - cy) * crop_scale, (xs - cx) * crop_scale
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    src_y = cos * dy - sin * dx + cy + shift[0]
    src_x = sin * dy + cos * dx + cx + shift[1]

    def channel(c):
        return jax.scipy.ndimage.map_coordinates(c, [src_y, src_x], order=1, mode="nearest")

    return jax.vmap(channel, in_axes=2, out_axes=2)(image)


@dataclasses.dataclass(frozen=True)
class ColorJitter:
    """Train-time colour augmentation of one image, applied with probability `p`.

    `space="hsv_openpi"` reproduces the distribution of openpi's `augmax.ColorJitter(brightness=0.3, contrast=0.4,
    saturation=0.5)` (hue 0.1 and p 0.5 are augmax's defaults): in HSV, brightness b ~ U(-0.3, 0.3) and
    contrast c ~ U(-0.4, 0.4) reshape the value channel with augmax's curves, the hue turns by U(-0.1, 0.1) of a
    full circle, and saturation is left as it is (augmax computes that adjustment but discards the result, so
    openpi checkpoints never saw it). `space="rgb"` is this repository's earlier jitter: brightness, contrast and
    saturation factors in RGB (1 +- strength), no hue.
    """

    brightness: float = 0.3
    contrast: float = 0.4
    saturation: float = 0.5
    hue: float = 0.1
    p: float = 0.5
    space: Literal["hsv_openpi", "rgb"] = "hsv_openpi"

    def __call__(self, image, rng):
        """[H, W, 3] in [0, 1] -> [H, W, 3] in [0, 1]."""
        apply_rng, rng = jax.random.split(rng)
        jittered = _hsv_jitter(image, rng, self) if self.space == "hsv_openpi" else _rgb_jitter(image, rng, self)
        if self.p >= 1.0:
            return jittered
        return jnp.where(jax.random.bernoulli(apply_rng, self.p), jittered, image)


# openpi's distribution: what users fine-tuning from pi05_base expect (the default).
OPENPI_COLOR_JITTER = ColorJitter()
# This repository's jitter before it matched openpi: on every image, RGB factors, no hue term.
RGB_ALWAYS_COLOR_JITTER = ColorJitter(hue=0.0, p=1.0, space="rgb")


def _rgb_jitter(image, rng, cfg: ColorJitter):
    b_rng, c_rng, s_rng = jax.random.split(rng, 3)
    image = image * jax.random.uniform(b_rng, (), minval=1 - cfg.brightness, maxval=1 + cfg.brightness)
    gray = image @ jnp.array([0.299, 0.587, 0.114], image.dtype)
    mean = jnp.mean(gray)
    image = (image - mean) * jax.random.uniform(c_rng, (), minval=1 - cfg.contrast, maxval=1 + cfg.contrast) + mean
    gray = (image @ jnp.array([0.299, 0.587, 0.114], image.dtype))[..., None]
    image = (image - gray) * jax.random.uniform(s_rng, (), minval=1 - cfg.saturation, maxval=1 + cfg.saturation) + gray
    return jnp.clip(image, 0.0, 1.0)


def _rgb_to_hsv(image):
    """[..., 3] RGB in [0, 1] -> hue (turns, [0, 1)), saturation, value; the textbook hexcone formulas."""
    value = image.max(axis=-1)
    spread = value - image.min(axis=-1)
    top = image.argmax(axis=-1)
    nxt = jnp.take_along_axis(image, ((top + 1) % 3)[..., None], axis=-1)[..., 0]
    nxt2 = jnp.take_along_axis(image, ((top + 2) % 3)[..., None], axis=-1)[..., 0]
    safe = jnp.where(spread > 0, spread, 1.0)
    hue = jnp.where(spread > 0, (2 * top + (nxt - nxt2) / safe) / 6, 0.0)
    saturation = jnp.where(value > 0, spread / jnp.where(value > 0, value, 1.0), 0.0)
    return hue, saturation, value


def _hsv_to_rgb(hue, saturation, value):
    k = jnp.mod(jnp.array([5.0, 3.0, 1.0]) + hue[..., None] * 6, 6)
    return value[..., None] * (1 - saturation[..., None] * jnp.clip(jnp.minimum(k, 4 - k), 0.0, 1.0))


def _hsv_jitter(image, rng, cfg: ColorJitter):
    b_rng, c_rng, h_rng = jax.random.split(rng, 3)
    hue, saturation, value = _rgb_to_hsv(image)
    b = jax.random.uniform(b_rng, (), minval=-cfg.brightness, maxval=cfg.brightness)
    # Brightness: darken by scaling towards 0, or brighten by moving towards 1.
    value = jnp.where(b < 0, value * (1 + b), value * (1 - b) + b)
    c = jax.random.uniform(c_rng, (), minval=-cfg.contrast, maxval=cfg.contrast)
    # Contrast: slope tan((c + 1) pi / 4) through (0.5, 0.5), bent at the ends so [0, 1] maps onto [0, 1].
    slope = jnp.tan((c + 1) * (jnp.pi / 4))
    knee = (slope - slope**2) / (2 * (1 - slope**2))
    value = jnp.where(
        value < knee,
        value / slope,
        jnp.where(value > 1 - knee, value / slope + 1 - 1 / slope, slope * (value - 0.5) + 0.5),
    )
    hue = hue + jax.random.uniform(h_rng, (), minval=-cfg.hue, maxval=cfg.hue)
    return jnp.clip(_hsv_to_rgb(hue, saturation, value), 0.0, 1.0)


def preprocess_observation(
    rng: jax.Array | None,
    observation: Observation,
    *,
    train: bool = False,
    image_keys: Sequence[str] = IMAGE_KEYS,
    image_resolution: tuple[int, int] = IMAGE_RESOLUTION,
    color_jitter: ColorJitter = OPENPI_COLOR_JITTER,
) -> Observation:
    """Model-side image pipeline: uint8 -> [-1, 1], resize-with-pad, and (train only) augmentation.

    Augmentation follows openpi: non-wrist cameras get a 95 % random crop resized back and a +-5 degree rotation;
    every camera gets `color_jitter` (openpi's by default: half the images, with a hue term). Missing masks
    default to True. Cameras not in `image_keys` are dropped.
    """
    missing = [k for k in image_keys if k not in observation.images]
    if missing:
        raise ObservationError(
            f"Observation lacks cameras {missing} (has {sorted(observation.images)}); send zero images with mask "
            "False for missing cameras."
        )
    if train and rng is None:
        raise ValueError("preprocess_observation(train=True) needs an rng for augmentation.")
    batch = observation.state.shape[0]
    images, masks = {}, {}
    for i, key in enumerate(image_keys):
        image = jnp.asarray(_to_float_image(key, observation.images[key]), jnp.float32)
        image = resize_with_pad(image, *image_resolution)
        if train:
            cam_rng = jax.random.fold_in(rng, i)
            x = image / 2.0 + 0.5
            rngs = jax.random.split(cam_rng, batch)
            if "wrist" not in key:
                warp_rngs = jax.vmap(lambda r: jax.random.fold_in(r, 1))(rngs)
                x = jax.vmap(lambda im, r: _warp(im, r, crop_scale=0.95, max_degrees=5.0))(x, warp_rngs)
            x = jax.vmap(color_jitter)(x, rngs)
            image = x * 2.0 - 1.0
        images[key] = image
        mask = observation.image_masks.get(key)
        masks[key] = jnp.ones((batch,), dtype=bool) if mask is None else jnp.asarray(mask, dtype=bool)
    return Observation(
        images=images,
        image_masks=masks,
        state=jnp.asarray(observation.state),
        tokenized_prompt=observation.tokenized_prompt,
        tokenized_prompt_mask=observation.tokenized_prompt_mask,
    )


@dataclasses.dataclass(frozen=True)
class BaseModelConfig(abc.ABC):
    """What training, serving and data code need to know about any policy model."""

    action_dim: int
    action_horizon: int
    max_token_len: int

    @abc.abstractmethod
    def init_params(self, rng: jax.Array) -> Params:
        """Freshly initialised parameters (a pure nested dict)."""

    @abc.abstractmethod
    def inputs_spec(self, *, batch_size: int = 1) -> tuple[Observation, jax.ShapeDtypeStruct]:
        """Shapes/dtypes of one observation batch and its action chunk."""

    def fake_obs(self, batch_size: int = 1) -> Observation:
        obs_spec, _ = self.inputs_spec(batch_size=batch_size)
        return jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), obs_spec)

    def fake_act(self, batch_size: int = 1) -> jax.Array:
        _, act_spec = self.inputs_spec(batch_size=batch_size)
        return jnp.ones(act_spec.shape, act_spec.dtype)
