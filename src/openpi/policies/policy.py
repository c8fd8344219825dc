"""`Policy`: one robot observation in, one unnormalised action chunk out.

`infer` runs openpi's steps: input transforms (robot → normalize → tokenize/pad), add a batch axis, the
jitted `sample_actions`, remove the batch axis, output transforms (unnormalise, back to robot units), and
reports ``policy_timing.infer_ms`` (model time only).

RECAP specifics, fixed here rather than left to each config:
  - the advantage indicator defaults to ``positive`` when the request carries no ``adv_ind``, and a request
    may ask for ``negative`` or ``none`` (no clause); anything else (None, NaN, "", "None", "POSITIVE") is a clear
    error, by the same rule as the dataset check (`openpi.recap.vocab.is_indicator`);
  - a policy whose prompt has no advantage clause (pi0, pi0.5) checks a request's ``adv_ind`` by that rule too,
    then ignores it, and says so: its metadata holds ``conditions_on_adv_ind: False`` (True for pi0.6) and
    the reply to a request that carried ``adv_ind`` holds ``adv_ind_ignored: True``. A client of the RECAP forks
    always sends ``adv_ind``, so refusing it would break them against a pi0.5 baseline; serving it silently
    would let an evaluation believe it measured a conditioned policy;
  - indicator dropout (a training-time regulariser) is switched off in every `TokenizePrompt` of the chain,
    even when a training config is served, so the clause is never silently dropped;
  - optional classifier-free guidance (``cfg_beta``, β): the input chain runs a second time with
    ``adv_ind="none"`` to produce the unconditional prompt, and the model combines both velocities in one
    batched pass: ``v = v_uncond + β (v_cond − v_uncond)``.

Bad observations raise `ObservationError` (a `UserError`) with one sentence naming the key, which the
server forwards to the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
import hashlib
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from openpi import transforms as _transforms
from openpi.models import model as _model
from openpi.models import tokenizer as _tokenizer
from openpi.recap import vocab
from openpi.shared import errors
from openpi.shared import normalize as _normalize
from openpi_client import base_policy as _base_policy

BasePolicy = _base_policy.BasePolicy

DEFAULT_ADV_IND = _tokenizer.POSITIVE


class ObservationError(errors.UserError, ValueError):
    """A request's observation is missing something or has the wrong shape or dtype."""


def _without_indicator_dropout(transform: Any) -> Any:
    """Returns `transform` with every `TokenizePrompt.indicator_dropout` set to 0 (recursing into composites)."""
    if isinstance(transform, _transforms.TokenizePrompt) and transform.indicator_dropout > 0:
        return dataclasses.replace(transform, indicator_dropout=0.0)
    if isinstance(transform, _transforms.CompositeTransform):
        return _transforms.CompositeTransform(tuple(_without_indicator_dropout(t) for t in transform.transforms))
    return transform


def _find(transform: Any, kind: type) -> list[Any]:
    """The transforms of type `kind` in a chain (recursing into composites)."""
    if isinstance(transform, kind):
        return [transform]
    if isinstance(transform, _transforms.CompositeTransform):
        return [t for sub in transform.transforms for t in _find(sub, kind)]
    return []


def _tokenizers(transform: Any) -> list[_transforms.TokenizePrompt]:
    return _find(transform, _transforms.TokenizePrompt)


def _action_stats(output_transform: Any) -> list[_normalize.NormStats]:
    """The `actions` stats of every `Unnormalize` in the output chain."""
    out = []
    for unnormalize in _find(output_transform, _transforms.Unnormalize):
        stats = (unnormalize.norm_stats or {}).get("actions")
        if stats is not None:
            out.append(stats if isinstance(stats, _normalize.NormStats) else _normalize.NormStats(**stats))
    return out


def _setup_error(exc: _normalize.NormStatsError) -> errors.ServerSetupError:
    """Norm stats that do not fit the data the policy's own transforms produce are the server's fault, whatever
    the request: the robot transforms have already checked the client's part (cameras, state width)."""
    return errors.ServerSetupError(f"The served policy's norm stats do not fit its own transforms: {exc}")


def _copy_tree(tree: Any) -> Any:
    """Copies dicts and arrays: arrays decoded from the wire are read-only views, and transforms may write."""
    if isinstance(tree, Mapping):
        return {k: _copy_tree(v) for k, v in tree.items()}
    if isinstance(tree, np.ndarray):
        return tree.copy()
    return tree


def _leaf_paths(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, Mapping):
        return [item for k, v in tree.items() for item in _leaf_paths(v, f"{prefix}{k}/")]
    return [(prefix[:-1], tree)]


def check_request(obs: Any) -> None:
    """Checks the parts of a raw robot observation every openpi robot layout shares.

    Array leaves under a key path containing "image" (`images/cam_high`, `observation/image`) must be numpy
    arrays of rank 3 with dtype uint8 or float; state leaves must be finite real-valued 1-d vectors. The robot
    transforms check the rest (which cameras, the state dimension, images sent as something else).
    """
    if not isinstance(obs, Mapping):
        raise ObservationError(f"The observation must be a dict, got {type(obs).__name__}.")
    if not obs:
        raise ObservationError(
            "The observation is empty; send the robot's cameras, state and prompt (see the server metadata)."
        )
    for path, leaf in _leaf_paths(obs):
        if not isinstance(path, str):
            raise ObservationError(f"Observation key {path!r} is not a string; use string keys only.")
        name = path.rsplit("/", 1)[-1].lower()
        is_image = "image" in path.lower() and not name.endswith("mask")
        if is_image and isinstance(leaf, list | tuple):
            raise ObservationError(
                f"Image {path!r} is a {type(leaf).__name__}; send each camera as one uint8 numpy array "
                "[height, width, 3] (or [3, height, width])."
            )
        if is_image and isinstance(leaf, np.ndarray):
            if leaf.size == 0:
                raise ObservationError(
                    f"Image {path!r} is empty (shape {leaf.shape}); send each camera's frame with height and width > 0."
                )
            if leaf.ndim != 3:
                raise ObservationError(
                    f"Image {path!r} has shape {leaf.shape}; expected one [height, width, 3] (or [3, height, width]) "
                    "array per camera."
                )
            if leaf.dtype != np.uint8 and not np.issubdtype(leaf.dtype, np.floating):
                raise ObservationError(
                    f"Image {path!r} has dtype {leaf.dtype}; send uint8 in [0, 255] (or float in [0, 1])."
                )
        elif name == "state" or name.endswith("_state") or name.endswith(".state"):
            if isinstance(leaf, int | float | np.number) and not isinstance(leaf, bool):
                raise ObservationError(
                    f"State {path!r} is a scalar ({leaf!r}); send a non-empty 1-d vector, one value per joint."
                )
            try:
                arr = np.asarray(leaf) if isinstance(leaf, np.ndarray | list | tuple) else None
            except ValueError:  # ragged nested lists
                arr = None
            if arr is None or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                dtype = getattr(arr, "dtype", type(leaf).__name__)
                raise ObservationError(f"State {path!r} has dtype {dtype}; send a float32 vector.")
            if arr.ndim != 1 or arr.size == 0:
                raise ObservationError(f"State {path!r} has shape {arr.shape}; send a non-empty 1-d vector.")
            bad = np.flatnonzero(~np.isfinite(arr))
            if len(bad):
                dims = bad[:8].tolist() + (["..."] if len(bad) > 8 else [])
                raise ObservationError(
                    f"State {path!r} has {len(bad)} NaN/inf values (dims {dims}); send finite joint values."
                )


_MAX_SEEN = 1_000_000


def _digest(inputs: dict) -> bytes:
    """8 bytes that identify the model inputs of one request (key names, dtypes, shapes and values)."""
    h = hashlib.blake2b(digest_size=8)
    for key, value in sorted(_transforms.flatten_dict(inputs).items()):
        arr = np.ascontiguousarray(np.asarray(value))
        h.update(f"{key}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(repr(arr.tolist()).encode() if arr.dtype == object else arr.tobytes())
    return h.digest()


class Policy(BasePolicy):
    """A model plus its transform chains, callable on single robot observations.

    Args:
        model: A model facade with ``sample_actions(params, rng, observation, **kwargs) -> [B, H, D]``
            (e.g. ``Pi0Config(...).model()``).
        params: The model's parameter tree.
        rng: Key for the sampling noise (split once per request).
        transforms: Input chain, robot observation → model inputs.
        output_transforms: Output chain, model outputs → robot actions.
        sample_kwargs: Extra keyword arguments for ``sample_actions`` (e.g. ``num_steps``).
        metadata: Sent to clients when they connect (with ``conditions_on_adv_ind`` added, see the module docstring).
        default_adv_ind: Indicator used when a request has no ``adv_ind``.
        cfg_beta: Classifier-free guidance strength β (None or 1: plain conditioning).
        noise_per_observation: Draw each request's sampling noise from `rng`, the model inputs and how often the
            same inputs came before, instead of from the order of requests. Several clients interleave their
            requests differently on every run; with this a simulated rollout, and so an evaluation or a
            collection, repeats exactly whatever the interleaving.
    """

    def __init__(
        self,
        model: Any,
        params: Any,
        *,
        rng: jax.Array | None = None,
        transforms: Sequence[_transforms.DataTransformFn] = (),
        output_transforms: Sequence[_transforms.DataTransformFn] = (),
        sample_kwargs: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        default_adv_ind: str | None = DEFAULT_ADV_IND,
        cfg_beta: float | None = None,
        noise_per_observation: bool = False,
    ) -> None:
        self._model = model
        self._params = params
        inputs = [_without_indicator_dropout(t) for t in transforms]
        self._input_transform = _transforms.compose(inputs)
        self._output_transform = _transforms.compose(output_transforms)
        self._action_stats = _action_stats(self._output_transform)
        self._conditions_on_adv_ind = any(t.use_adv_ind for t in _tokenizers(self._input_transform))
        self._metadata = {**(metadata or {}), "conditions_on_adv_ind": self._conditions_on_adv_ind}
        self._default_adv_ind = _tokenizer.normalize_indicator(default_adv_ind)
        self._rng = rng if rng is not None else jax.random.key(0)
        self._rng_lock = threading.Lock()
        self._noise_per_observation = noise_per_observation
        # inputs digest -> requests with those inputs so far (noise_per_observation only).
        self._seen: dict[bytes, int] = {}

        if cfg_beta is not None and cfg_beta == 1.0:
            cfg_beta = None  # β = 1 is plain conditioning: skip the unconditional pass.
        if cfg_beta is not None:
            if cfg_beta <= 0:
                raise errors.ConfigError(f"cfg_beta must be positive (paper: 1.5 to 2.5), got {cfg_beta}.")
            if not self._conditions_on_adv_ind:
                raise errors.ConfigError(
                    "cfg_beta needs a pi0.6 config whose prompt carries the advantage clause (TokenizePrompt with "
                    "use_adv_ind=True); this policy's prompt has none."
                )
        self._cfg_beta = cfg_beta
        self._sample_kwargs = dict(sample_kwargs or {})
        static = dict(self._sample_kwargs)
        if cfg_beta is not None:
            static["cfg_beta"] = float(cfg_beta)

        def sample(params, rng, observation, noise, uncond_prompt, uncond_mask):
            kwargs = dict(static)
            if noise is not None:
                kwargs["noise"] = noise
            if uncond_prompt is not None:
                kwargs["uncond_tokenized_prompt"] = uncond_prompt
                kwargs["uncond_tokenized_prompt_mask"] = uncond_mask
            return model.sample_actions(params, rng, observation, **kwargs)

        self._sample_actions = jax.jit(sample)

    @property
    def metadata(self) -> dict[str, Any]:
        return self._metadata

    @property
    def cfg_beta(self) -> float | None:
        return self._cfg_beta

    def _transform_inputs(self, obs: dict, adv_ind: str) -> dict:
        data = _copy_tree(obs)
        data[vocab.ADV_IND] = adv_ind
        try:
            return self._input_transform(data)
        except _transforms.MissingPromptError as exc:
            raise ObservationError(
                "The request has no 'prompt' and this policy has no default prompt; send a 'prompt' string with "
                "each observation, or start the server with --default-prompt='<task>'."
            ) from exc
        except _normalize.NormStatsError as exc:
            raise _setup_error(exc) from exc
        except errors.UserError:
            raise
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            # The robot transforms assume their layout; a request that breaks that assumption is the client's
            # fault, so say which assumption broke instead of calling it an internal error.
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ObservationError(
                f"The observation does not fit this policy's input transforms ({type(exc).__name__}: {detail}); "
                f"check it against the server metadata and the robot's example observation."
            ) from exc

    def infer(self, obs: dict, *, noise: np.ndarray | None = None) -> dict:  # type: ignore[override]
        """Returns ``{"actions": [H, D_robot], "policy_timing": {"infer_ms": ...}, ...}`` for one observation."""
        check_request(obs)
        # A missing key means the documented default; a present one must be one of the three words (never null).
        adv_ind = _tokenizer.parse_indicator(obs[vocab.ADV_IND]) if vocab.ADV_IND in obs else self._default_adv_ind
        # With CFG the request's indicator is the conditional prompt and "none" the unconditional one.
        inputs = self._transform_inputs(obs, adv_ind or "none")
        uncond_prompt = uncond_mask = None
        if self._cfg_beta is not None:
            uncond = self._transform_inputs(obs, "none")
            uncond_prompt = jnp.asarray(uncond["tokenized_prompt"])[None]
            uncond_mask = jnp.asarray(uncond["tokenized_prompt_mask"])[None]

        inputs.pop("actions", None)
        batched = jax.tree.map(lambda x: np.asarray(x)[None, ...], inputs)
        observation = _model.Observation.from_dict(batched)
        self._check_model_inputs(observation)
        if noise is not None:
            noise = jnp.asarray(noise, dtype=jnp.float32)
            noise = noise[None] if noise.ndim == 2 else noise

        sample_rng = self._request_key(inputs)
        start = time.monotonic()
        actions = self._sample_actions(self._params, sample_rng, observation, noise, uncond_prompt, uncond_mask)
        actions = np.asarray(jax.device_get(actions))
        model_ms = (time.monotonic() - start) * 1000

        outputs = {"state": np.asarray(batched["state"])[0], "actions": actions[0]}
        try:
            outputs = self._output_transform(outputs)
            self._check_action_width(outputs)
        except _normalize.NormStatsError as exc:
            raise _setup_error(exc) from exc
        outputs = {k: np.asarray(v) if isinstance(v, jax.Array) else v for k, v in outputs.items()}
        outputs["policy_timing"] = {"infer_ms": model_ms}
        if vocab.ADV_IND in obs and not self._conditions_on_adv_ind:
            outputs["adv_ind_ignored"] = True  # see the module docstring
        return outputs

    def _check_action_width(self, outputs: dict) -> None:
        """Refuses action stats narrower than the actions the robot receives, mirroring `transforms.Normalize` on
        the input side. `Unnormalize` sees the model's padded action_dim, so only here, after the robot output
        transforms have cut the actions to the robot's width, is it known which dims reach the robot: with 7-dim
        stats on a 14-dim robot, dims 7-13 would arrive in normalised model units. Wider stats are fine here (the
        output transforms drop the model's extra dims)."""
        if "actions" not in outputs or not self._action_stats:
            return
        width = int(np.shape(outputs["actions"])[-1])
        for stats in self._action_stats:
            if stats.dim < width:
                _normalize.check_width("actions", stats, width, source="the output chain (the robot's actions)")

    def _request_key(self, inputs: dict) -> jax.Array:
        if not self._noise_per_observation:
            with self._rng_lock:
                self._rng, key = jax.random.split(self._rng)
            return key
        digest = _digest(inputs)
        with self._rng_lock:
            repeat = self._seen.get(digest, 0)
            if len(self._seen) >= _MAX_SEEN:
                self._seen.clear()  # bounds a long-running server's memory; only repeats past this many matter
            self._seen[digest] = repeat + 1
        key = self._rng
        for word in (int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little"), repeat % 2**32):
            key = jax.random.fold_in(key, word)
        return key

    def _check_model_inputs(self, observation: _model.Observation) -> None:
        config = getattr(self._model, "config", None)
        try:
            _model.check_observation(
                observation,
                # The cameras this model reads (a sim config has one), not openpi's three default slots.
                image_keys=getattr(config, "image_keys", _model.IMAGE_KEYS),
                state_dim=getattr(config, "action_dim", None),
                max_token_len=getattr(config, "max_token_len", None),
            )
        except _model.ObservationError as exc:
            raise ObservationError(f"After the input transforms: {exc}") from exc
