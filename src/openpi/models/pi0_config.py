"""`Pi0Config`: openpi's pi0 / pi0.5 configuration, plus `pistar` (pi0.6) and a selectable SigLIP tower.

pi0.6 here is pi0.5 whose prompt carries the RECAP advantage clause; the model itself is unchanged, only the prompt
budget grows (+3 tokens of headroom for ", Advantage: positive"). `pistar` on pi0 (`pi05=False`) is RECAP on a pi0
policy: the clause follows the task text and the state keeps its continuous projection (for robots, or state-only
simulators, whose policy is pi0-based). Parameters are pure nested dicts whose paths and
shapes match openpi's checkpoints; `get_freeze_filter` reproduces openpi's LoRA freezing rule on those paths.
"""

from collections.abc import Callable
import dataclasses
import re
from typing import TYPE_CHECKING
from typing import Any

import jax
import jax.numpy as jnp

from openpi.models import gemma
from openpi.models import model as _model
from openpi.models import siglip
from openpi.shared import errors

if TYPE_CHECKING:
    from openpi.models import pi0

# Extra prompt tokens reserved for the advantage clause of pi0.6 prompts.
PISTAR_EXTRA_TOKENS = 3
# The SigLIP tower that dummy LLMs get unless told otherwise (openpi's debug config uses So400m/14: ~20x slower).
TINY_SIGLIP = "mu/32"


@dataclasses.dataclass(frozen=True)
class Pi0Config(_model.BaseModelConfig):
    # Compute dtype of activations; parameters are always created in float32.
    dtype: str = "bfloat16"
    paligemma_variant: gemma.Variant = "gemma_2b"
    action_expert_variant: gemma.Variant = "gemma_300m"

    action_dim: int = 32
    action_horizon: int = 50
    # None -> 48 (pi0) or 200 (pi0.5), + PISTAR_EXTRA_TOKENS with pistar.
    max_token_len: int = None  # type: ignore[assignment]
    # pi0.5: the state goes into the prompt as discrete tokens and the action expert uses adaRMS for the time.
    pi05: bool = False
    # Read by the data transforms, not by the model; None -> pi05.
    discrete_state_input: bool = None  # type: ignore[assignment]
    # RECAP: the prompt carries the advantage indicator (pi0.6 with pi05; pi0 + indicator without).
    pistar: bool = False
    # None -> "So400m/14" (openpi), or the tiny "mu/32" when the PaliGemma LLM is a dummy variant.
    siglip_variant: str | None = None
    # SigLIP position embedding: "learn" (openpi's learned table, the default: checkpoints unchanged) or "sincos2d"
    # (fixed 2-D sine-cosine grid, no parameter; for from-scratch toy towers that must localise, see siglip.py).
    siglip_posemb: str = "learn"
    # Rematerialise transformer layers in the backward pass (memory for speed; openpi always does).
    remat: bool = True
    # Unroll the Gemma layer scan (gemma.Module.unroll_layers): same parameters and values, a faster backward for
    # shallow toy models on CPU; off for openpi's configs (compile time grows with depth).
    unroll_layers: bool = False
    # Toy-size knobs (openpi's values by default; the parameter tree changes only through `vocab_size`):
    # the cameras the model reads (model-side names, in order), the resolution images are
    # resized to before SigLIP, and the rows of the token embedding (at dummy width the 257k-row PaliGemma
    # table is >95 % of the parameters and of the optimizer's work; toy tokenizers need far fewer rows).
    image_keys: tuple[str, ...] = _model.IMAGE_KEYS
    image_resolution: tuple[int, int] = _model.IMAGE_RESOLUTION
    vocab_size: int = gemma.PALIGEMMA_VOCAB_SIZE
    # Train-time image augmentation (openpi's crop, rotation and colour jitter). The simulated tasks turn it off:
    # there the button's colour is the instruction and its pixel position is the target.
    augment_images: bool = True

    def __post_init__(self):
        if self.max_token_len is None:
            base = 200 if self.pi05 else 48
            object.__setattr__(self, "max_token_len", base + (PISTAR_EXTRA_TOKENS if self.pistar else 0))
        if self.discrete_state_input is None:
            object.__setattr__(self, "discrete_state_input", self.pi05)
        if self.siglip_variant is None:
            tiny = self.paligemma_variant.startswith("dummy")
            object.__setattr__(self, "siglip_variant", TINY_SIGLIP if tiny else "So400m/14")
        gemma.get_config(self.paligemma_variant)
        if not self.image_keys:
            raise errors.ConfigError(
                "Pi0Config.image_keys is empty; keep at least one camera slot (a state-only robot sends a masked "
                "black image, e.g. sim_policy.SimInputs(state_only=True))."
            )
        unknown = [k for k in self.image_keys if k not in _model.IMAGE_KEYS]
        if unknown:
            raise errors.ConfigError(
                f"Pi0Config.image_keys {unknown} are not model cameras; use some of {_model.IMAGE_KEYS}."
            )
        if len(self.image_resolution) != 2 or min(self.image_resolution) < 1:
            raise errors.ConfigError(
                f"Pi0Config.image_resolution must be (height, width), got {self.image_resolution}."
            )
        if self.vocab_size < 1:
            raise errors.ConfigError(f"Pi0Config.vocab_size must be positive, got {self.vocab_size}.")
        gemma.get_config(self.action_expert_variant)
        siglip.get_config(self.siglip_variant)
        if self.siglip_posemb not in siglip.POSEMB_KINDS:
            raise errors.ConfigError(
                f"Pi0Config.siglip_posemb is {self.siglip_posemb!r}; use one of {siglip.POSEMB_KINDS}."
            )
        if self.dtype not in ("bfloat16", "float32", "float16"):
            raise errors.ConfigError(f"Pi0Config.dtype is {self.dtype!r}; use 'bfloat16' or 'float32'.")

    @property
    def model_type(self) -> str:
        if self.pistar:
            return "pi06" if self.pi05 else "pi0_recap"
        return "pi05" if self.pi05 else "pi0"

    def model(self) -> "pi0.Pi0":
        """The stateless model facade (`init_params`, `compute_loss`, `sample_actions`)."""
        from openpi.models import pi0

        return pi0.Pi0(self)

    def init_params(self, rng: jax.Array) -> _model.Params:
        return self.model().init_params(rng)

    def params_shape(self) -> _model.Params:
        """The parameter tree as `jax.ShapeDtypeStruct`s, without allocating (works for the 3.3B model on a laptop)."""
        return jax.eval_shape(self.init_params, jax.random.key(0))

    def inputs_spec(self, *, batch_size: int = 1) -> tuple[_model.Observation, jax.ShapeDtypeStruct]:
        image = jax.ShapeDtypeStruct((batch_size, *self.image_resolution, 3), jnp.float32)
        mask = jax.ShapeDtypeStruct((batch_size,), jnp.bool_)
        obs = _model.Observation(
            images=dict.fromkeys(self.image_keys, image),
            image_masks=dict.fromkeys(self.image_keys, mask),
            state=jax.ShapeDtypeStruct((batch_size, self.action_dim), jnp.float32),
            tokenized_prompt=jax.ShapeDtypeStruct((batch_size, self.max_token_len), jnp.int32),
            tokenized_prompt_mask=jax.ShapeDtypeStruct((batch_size, self.max_token_len), jnp.bool_),
        )
        return obs, jax.ShapeDtypeStruct((batch_size, self.action_horizon, self.action_dim), jnp.float32)

    def get_freeze_filter(self) -> "FreezeFilter":
        """Openpi's rule for which weights the optimizer must not touch (True = frozen).

        - PaliGemma LLM is LoRA: freeze every `llm` weight, except the action expert's (`_1`) when the action expert
          is not LoRA; the vision tower and the projections stay trainable.
        - Only the action expert is LoRA: freeze only its `llm ... _1` weights.
        - In both cases `lora` adapters stay trainable. Without LoRA nothing is frozen.
        """
        freeze: list[str] = []
        keep: list[str] = []
        if "lora" in self.paligemma_variant:
            freeze.append(r".*llm.*")
            if "lora" not in self.action_expert_variant:
                keep.append(r".*llm.*_1.*")
        elif "lora" in self.action_expert_variant:
            freeze.append(r".*llm.*_1.*")
        if freeze:
            keep.append(r".*lora.*")
        return FreezeFilter(freeze=tuple(freeze), keep=tuple(keep))

    def trainable_mask(self, params: _model.Params) -> Any:
        """A tree like `params` with True where the weight is trained (the complement of the freeze filter)."""
        return self.get_freeze_filter().trainable_mask(params)


@dataclasses.dataclass(frozen=True)
class FreezeFilter:
    """Selects frozen weights by '/'-joined path: matches any `freeze` regex and none of the `keep` regexes."""

    freeze: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()

    def __call__(self, path: str) -> bool:
        if not any(re.fullmatch(p, path) for p in self.freeze):
            return False
        return not any(re.fullmatch(p, path) for p in self.keep)

    def trainable_mask(self, params: Any) -> Any:
        return map_with_path(lambda path, _: not self(path), params)


def path_str(path: tuple[Any, ...]) -> str:
    """'/'-joined key path of a nested-dict leaf, e.g. 'PaliGemma/llm/layers/attn/q_einsum/w'."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def map_with_path(fn: Callable[[str, Any], Any], tree: Any) -> Any:
    return jax.tree_util.tree_map_with_path(lambda p, x: fn(path_str(p), x), tree)
