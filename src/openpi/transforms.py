"""The transform chain that turns a dataset frame (or a robot observation) into model inputs, and back.

A chain runs repack → data (robot) → normalize → model on the way in, and the reverse on the way out.
Every transform is a pure function on a flat-ish dict of numpy arrays, so the same chain serves training,
serving and relabelling without knowing where the data came from.
"""

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
from typing import Any
from typing import ClassVar
from typing import Protocol
from typing import runtime_checkable

import numpy as np
from PIL import Image

from openpi.models import tokenizer as _tokenizer
from openpi.recap import vocab
from openpi.shared import errors
from openpi.shared import normalize as _normalize

DataDict = dict[str, Any]


class TransformError(errors.UserError, ValueError):
    """A frame or observation does not have what the transform chain needs."""


class MissingPromptError(TransformError):
    """The frame reaches the tokenizer without a prompt (`Policy` turns it into advice for the server flags)."""


@runtime_checkable
class DataTransformFn(Protocol):
    """A transform: takes a data dict, returns a (possibly new) data dict."""

    def __call__(self, data: DataDict) -> DataDict: ...


@dataclasses.dataclass(frozen=True)
class Group:
    """Input transforms and the output transforms that undo them, kept together so they stay in sync."""

    inputs: Sequence[DataTransformFn] = ()
    outputs: Sequence[DataTransformFn] = ()

    def push(self, *, inputs: Sequence[DataTransformFn] = (), outputs: Sequence[DataTransformFn] = ()) -> "Group":
        """Appends inputs at the end of the input chain and outputs at the start of the output chain."""
        return Group(inputs=(*self.inputs, *inputs), outputs=(*outputs, *self.outputs))


# Keys that belong to the chain rather than to any robot: the advantage indicator (set by the dataset column or
# by `Policy`) and the frame's `sample_id` (set by the data loader, it seeds the indicator dropout). A transform
# that builds a fresh dict (openpi's `AlohaInputs` / `LiberoInputs` style, or `RepackTransform`, which drops what
# it does not name) would otherwise lose them silently, and the prompt would quietly become unconditional.
CARRIED_KEYS = (vocab.ADV_IND, "sample_id")


def user_keys(data: Mapping[str, Any]) -> list[str]:
    """The keys of `data` for error messages: without `CARRIED_KEYS`, which the chain (not the user) may have set."""
    return sorted(k for k in data if k not in CARRIED_KEYS)


def _consumes(transform: Any) -> frozenset[str]:
    return frozenset(getattr(transform, "consumes", ()))


@dataclasses.dataclass(frozen=True)
class CompositeTransform:
    """Applies transforms in order, carrying `CARRIED_KEYS` past transforms that do not declare they consume them.

    A transform declares `consumes` (a set of key names) when removing a carried key is its job (`TokenizePrompt`
    turns `adv_ind` into the prompt); any other transform that returns a dict without a carried key it was given
    gets the key put back, so no robot transform has to remember to forward it.
    """

    transforms: Sequence[DataTransformFn]

    @property
    def consumes(self) -> frozenset[str]:
        return frozenset().union(*(_consumes(t) for t in self.transforms))

    def __call__(self, data: DataDict) -> DataDict:
        for transform in self.transforms:
            carried = {k: data[k] for k in CARRIED_KEYS if isinstance(data, Mapping) and k in data}
            data = transform(data)
            lost = {k: v for k, v in carried.items() if k not in data and k not in _consumes(transform)}
            if lost and isinstance(data, Mapping):
                data = {**data, **lost}
        return data


def compose(transforms: Sequence[DataTransformFn]) -> DataTransformFn:
    return CompositeTransform(tuple(transforms))


def flatten_dict(tree: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a/b": 1}; LeRobot keys with dots are left alone."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            for sub_key, sub_value in flatten_dict(value, sep).items():
                out[f"{key}{sep}{sub_key}"] = sub_value
        else:
            out[key] = value
    return out


def unflatten_dict(flat: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """Inverse of `flatten_dict`."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(sep)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TransformError(f"Key {key!r} clashes with a leaf at {part!r}; rename one of them.")
        node[parts[-1]] = value
    return out


@dataclasses.dataclass(frozen=True)
class RepackTransform:
    """Renames dataset keys into the robot transform's keys.

    `structure` is the output layout whose leaves are flat source keys ("a/b" for nested inputs), e.g.
    {"images": {"cam_high": "observation.images.head_camera"}, "state": "observation.state"}. Keys of the
    source that the structure does not name are dropped, which is what keeps unused columns out of batches.
    """

    structure: Mapping[str, Any]

    def __call__(self, data: DataDict) -> DataDict:
        flat = flatten_dict(data)
        out: dict[str, Any] = {}
        for new_key, old_key in flatten_dict(self.structure).items():
            if old_key not in flat:
                raise TransformError(
                    f"Repack needs the key {old_key!r} (for {new_key!r}) but the frame only has "
                    f"{user_keys(flat)}; fix the config's repack structure or the dataset columns."
                )
            out[new_key] = flat[old_key]
        return unflatten_dict(out)


@dataclasses.dataclass(frozen=True)
class InjectDefaultPrompt:
    """Sets `prompt` when the frame or observation does not carry one."""

    prompt: str | None

    def __call__(self, data: DataDict) -> DataDict:
        if self.prompt is not None and "prompt" not in data:
            data = {**data, "prompt": np.asarray(self.prompt)}
        return data


def _as_norm_stats(stats: Any) -> _normalize.NormStats:
    if isinstance(stats, _normalize.NormStats):
        return stats
    if isinstance(stats, Mapping):
        return _normalize.NormStats(**stats)
    raise TransformError(f"Expected NormStats for normalisation but got {type(stats).__name__}.")


def normalize_array(x: np.ndarray, stats: Any, *, use_quantiles: bool) -> np.ndarray:
    """z-score or quantile normalisation (see `openpi.shared.normalize`); padded dims pass through.

    The result is float64, as in openpi (float32 data minus float64 stats): the pi0.5 prompt bins this value,
    and rounding it to float32 first moves states near a bin edge into the next bin. `PadStatesAndActions`
    casts to float32 for the model after tokenisation.
    """
    return _normalize.normalize(np.asarray(x, np.float64), _as_norm_stats(stats), use_quantiles=use_quantiles)


def unnormalize_array(x: np.ndarray, stats: Any, *, use_quantiles: bool) -> np.ndarray:
    """Inverse of `normalize_array`."""
    return _normalize.unnormalize(np.asarray(x, np.float32), _as_norm_stats(stats), use_quantiles=use_quantiles)


def _apply_to_stats_keys(
    data: DataDict, norm_stats: Mapping[str, Any], fn: Callable[..., np.ndarray], strict: bool, with_key: bool = False
) -> DataDict:
    flat = flatten_dict(data)
    for key, stats in norm_stats.items():
        if key not in flat:
            if strict:
                raise TransformError(f"Norm stats name {key!r} but the data has only {sorted(flat)}.")
            continue
        flat[key] = fn(flat[key], stats, key) if with_key else fn(flat[key], stats)
    return unflatten_dict(flat)


@dataclasses.dataclass(frozen=True)
class Normalize:
    """Normalises the keys that have stats (usually `state` and `actions`).

    The stats must be as wide as the data (`openpi.shared.normalize.check_width`: wider only by padding dims);
    narrower stats are refused rather than normalising the leading dims only.
    """

    norm_stats: Mapping[str, Any] | None
    use_quantiles: bool = False
    strict: bool = False

    def __call__(self, data: DataDict) -> DataDict:
        if self.norm_stats is None:
            return data

        def fn(x: np.ndarray, stats: Any, key: str) -> np.ndarray:
            stats = _as_norm_stats(stats)
            # Narrower stats would normalise the leading dims only and pass the rest through raw.
            _normalize.check_width(key, stats, int(np.shape(x)[-1]) if np.ndim(x) else 1)
            return normalize_array(x, stats, use_quantiles=self.use_quantiles)

        return _apply_to_stats_keys(data, self.norm_stats, fn, self.strict, with_key=True)


@dataclasses.dataclass(frozen=True)
class Unnormalize:
    """Undoes `Normalize` on model outputs."""

    norm_stats: Mapping[str, Any] | None
    use_quantiles: bool = False

    def __call__(self, data: DataDict) -> DataDict:
        if self.norm_stats is None:
            return data
        fn = lambda x, s: unnormalize_array(x, s, use_quantiles=self.use_quantiles)  # noqa: E731
        return _apply_to_stats_keys(data, self.norm_stats, fn, strict=False)


def _resize_channels(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image).resize((width, height), resample=Image.BILINEAR))
    channels = [
        np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F").resize((width, height), Image.BILINEAR))
        for c in range(image.shape[-1])
    ]
    return np.stack(channels, axis=-1).astype(image.dtype)


def resize_with_pad(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes [..., H, W, C] images to fit in (height, width) keeping the aspect ratio, zero-padding the rest.

    Black bars rather than stretching: this is what pi0 checkpoints saw in pretraining.
    """
    images = np.asarray(images)
    if images.ndim < 3 or 0 in images.shape[-3:]:
        raise TransformError(
            f"Cannot resize an empty image of shape {images.shape}; send images of shape [height, width, 3] with "
            "height and width > 0."
        )
    cur_h, cur_w = images.shape[-3], images.shape[-2]
    if (cur_h, cur_w) == (height, width):
        return images
    ratio = max(cur_w / width, cur_h / height)
    new_h, new_w = int(cur_h / ratio), int(cur_w / ratio)
    lead = images.shape[:-3]
    flat = images.reshape(-1, cur_h, cur_w, images.shape[-1])
    out = np.zeros((flat.shape[0], height, width, images.shape[-1]), dtype=images.dtype)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    for i, image in enumerate(flat):
        out[i, top : top + new_h, left : left + new_w] = _resize_channels(image, new_h, new_w)
    return out.reshape(*lead, height, width, images.shape[-1])


@dataclasses.dataclass(frozen=True)
class ResizeImages:
    """Resizes every image under `image` to (height, width) with padding."""

    height: int
    width: int

    def __call__(self, data: DataDict) -> DataDict:
        if "image" not in data:
            raise TransformError(f"ResizeImages needs an 'image' dict but the data has only {sorted(data)}.")
        images = {k: resize_with_pad(v, self.height, self.width) for k, v in data["image"].items()}
        return {**data, "image": images}


def make_bool_mask(*dims: int) -> tuple[bool, ...]:
    """make_bool_mask(6, -1, 6, -1) -> six True, one False, six True, one False (delta joints, absolute grippers)."""
    mask: list[bool] = []
    for dim in dims:
        mask.extend([dim > 0] * abs(dim))
    return tuple(mask)


def _delta_offset(data: DataDict, mask: Sequence[bool]) -> tuple[np.ndarray, np.ndarray, int]:
    state = np.asarray(data["state"], dtype=np.float32)
    actions = np.asarray(data["actions"], dtype=np.float32)
    dims = len(mask)
    if state.shape[-1] < dims or actions.shape[-1] < dims:
        raise TransformError(
            f"The delta-action mask covers {dims} dims but state has {state.shape[-1]} and actions "
            f"{actions.shape[-1]}; shorten the mask in the config."
        )
    offset = np.where(np.asarray(mask), state[..., :dims], 0.0)
    return actions.copy(), np.expand_dims(offset, axis=-2), dims


@dataclasses.dataclass(frozen=True)
class DeltaActions:
    """Makes the masked action dims relative to the current state (joints), leaving the rest absolute (grippers)."""

    mask: Sequence[bool] | None

    def __call__(self, data: DataDict) -> DataDict:
        if self.mask is None or "actions" not in data:
            return data
        actions, offset, dims = _delta_offset(data, self.mask)
        actions[..., :dims] -= offset
        return {**data, "actions": actions}


@dataclasses.dataclass(frozen=True)
class AbsoluteActions:
    """Inverse of `DeltaActions`, applied to model outputs."""

    mask: Sequence[bool] | None

    def __call__(self, data: DataDict) -> DataDict:
        if self.mask is None or "actions" not in data:
            return data
        actions, offset, dims = _delta_offset(data, self.mask)
        actions[..., :dims] += offset
        return {**data, "actions": actions}


def _pad_last(x: np.ndarray, dim: int, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.shape[-1] > dim:
        raise TransformError(
            f"{name} has {x.shape[-1]} dims, more than the model's action_dim {dim}; raise action_dim in the config."
        )
    pad = [(0, 0)] * (x.ndim - 1) + [(0, dim - x.shape[-1])]
    return np.pad(x, pad)


@dataclasses.dataclass(frozen=True)
class PadStatesAndActions:
    """Zero-pads state and actions to the model's action_dim (after tokenisation, which sees the real dims), as
    the float32 the model computes in."""

    model_action_dim: int

    def __call__(self, data: DataDict) -> DataDict:
        state = _pad_last(data["state"], self.model_action_dim, "state").astype(np.float32)
        data = {**data, "state": state}
        if "actions" in data:
            data["actions"] = _pad_last(data["actions"], self.model_action_dim, "actions").astype(np.float32)
        return data


def to_text(value: Any) -> str:
    """Reads a string that may arrive as str, bytes, a 0-d or [1] numpy array (LeRobot string columns)."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise TransformError(f"Expected a single string but got an array of shape {value.shape}.")
        value = value.reshape(()).item()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise TransformError(f"Expected a string but got {type(value).__name__} {value!r}.")
    return value


@dataclasses.dataclass(frozen=True)
class TokenizePrompt:
    """Tokenises the prompt (pi0: text; pi0.5: text + discretised state; pi0.6: + the advantage clause).

    With `indicator_dropout > 0` (training only) the clause is dropped with that probability, which is what
    teaches the unconditional prompt that classifier-free guidance needs. The draw is seeded from `seed` and
    the frame's `sample_id` (set by the data loader), so it is the same whatever the number of workers.

    With `use_adv_ind` (pi0.6) a frame without an `adv_ind` key is an error, not "no indicator": a missing key
    means something upstream lost the column, and training or serving the unconditional prompt by accident
    makes classifier-free guidance a no-op. "No clause" is asked for explicitly with `adv_ind="none"`.
    Likewise a dropout draw without a `sample_id` is an error rather than the same draw for every frame.
    """

    tokenizer: Any
    discrete_state_input: bool = False
    use_adv_ind: bool = False
    indicator_dropout: float = 0.0
    seed: int = 0
    consumes: ClassVar[frozenset[str]] = frozenset({vocab.ADV_IND, "sample_id"})

    def _indicator(self, data: DataDict) -> str | None:
        if vocab.ADV_IND not in data:
            raise TransformError(
                f"This pi0.6 config conditions on the advantage indicator but the frame reaching the tokenizer has "
                f"no 'adv_ind' (only {sorted(data)}); label the dataset (adv_ind column) and name it in the repack, "
                "or use a config without the indicator."
            )
        raw = data[vocab.ADV_IND]
        if self.indicator_dropout <= 0.0:
            return _tokenizer.normalize_indicator(raw)
        if "sample_id" not in data:
            raise TransformError(
                "Indicator dropout needs the frame's 'sample_id' (set by the training data loader) to seed its draw; "
                "run the chain through the data loader, or set indicator_dropout to 0 outside training."
            )
        raw_id = data["sample_id"]
        arr = None if isinstance(raw_id, str | bytes) or raw_id is None else np.asarray(raw_id)
        if arr is None or arr.ndim != 0 or not np.issubdtype(arr.dtype, np.integer):
            raise TransformError(
                f"'sample_id' must be one integer (the frame's id), got {raw_id!r}; the training data loader sets it, "
                "so pass the frame index, or set indicator_dropout to 0 outside training."
            )
        sample_id = int(arr)
        rng = np.random.default_rng([self.seed, sample_id, 0x1D])
        return _tokenizer.IndicatorDropout(self.indicator_dropout).apply(raw, rng)

    def __call__(self, data: DataDict) -> DataDict:
        if "prompt" not in data:
            raise MissingPromptError(
                "The frame has no 'prompt'; set a default prompt in the config or enable prompt_from_task."
            )
        data = dict(data)
        prompt = to_text(data.pop("prompt"))
        adv_ind = self._indicator(data) if self.use_adv_ind else None
        data.pop(vocab.ADV_IND, None)
        data.pop("sample_id", None)
        kwargs: dict[str, Any] = {}
        if self.discrete_state_input:
            kwargs["state"] = np.asarray(data["state"])  # binned at its own precision (float64 after Normalize)
        if self.use_adv_ind:
            kwargs[vocab.ADV_IND] = adv_ind
        tokens, mask = self.tokenizer.tokenize(prompt, **kwargs)
        data["tokenized_prompt"] = np.asarray(tokens, dtype=np.int32)
        data["tokenized_prompt_mask"] = np.asarray(mask, dtype=bool)
        return data
