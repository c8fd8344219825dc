"""The RECAP value model (critic): SigLIP + Gemma3 + a 201-bin distributional head over [-1, 0].

    cameras --SigLIP (one tower, shared by all cameras)--> `img/head` projection into the Gemma3 width
    state   --`state_proj` (only when `state_dim` > 0)--> one token, as pi0 feeds its continuous state
    prompt  --Gemma3 SentencePiece--> tokens --`llm/embedder`-->
    Gemma3 over [image tokens, state token, prompt tokens] -> hidden state of the last valid token -> MLP -> 201 logits

Attention: image tokens and the state token see each other (one bidirectional block, as in PaliGemma / Gemma3
vision), prompt tokens are causal and see every image and state token. The readout is the LAST valid prompt token
(`readout="last"`), the one position that has seen everything, as a causal LM summarises its input;
`readout="mean"` (masked mean over all valid tokens) is available.

The value distribution is categorical over `num_bins` evenly spaced atoms on [v_min, v_max] (C51). A point
target is clipped to that range and split over its two neighbouring atoms (`two_hot`); the loss is the cross-entropy
against that; the value is the expectation (`expected_value`). A uniform prediction has loss ln(201) ~ 5.3.
`hl_gauss` is the alternative target (HL-Gauss, Imani & White 2018; Farebrother et al. 2024): the mass a Gaussian
around the target puts in each bin, so neighbouring returns share bins and the loss says "close" as well as "right".

The camera list and the prompt format are part of `ValueModelConfig` and are written into every checkpoint
(`to_json`), so a labeller cannot silently feed the model other inputs than it was trained on.
"""

import dataclasses
import json
import math
from typing import Any
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from openpi.models import gemma3
from openpi.models import model as _model
from openpi.models import siglip
from openpi.models import tokenizer as _tokenizer
from openpi.shared import errors

FreezeMode = Literal["all_backbones", "siglip_only", "none"]
FREEZE_MODES: tuple[str, ...] = ("all_backbones", "siglip_only", "none")
# "task": BOS + cleaned task text. "task_state": BOS + "Task: {text}, State: {bins};\n" with the normalised state
# digitised into 256 bins over [-1, 1] exactly as the pi0.5 prompt does.
PromptFormat = Literal["task", "task_state"]
PROMPT_FORMATS: tuple[str, ...] = ("task", "task_state")
Readout = Literal["last", "mean"]
# The categorical target a point value is turned into (a training choice; checkpoints do not depend on it).
ValueTarget = Literal["two_hot", "hl_gauss"]
VALUE_TARGETS: tuple[str, ...] = ("two_hot", "hl_gauss")


@dataclasses.dataclass(frozen=True)
class ValueModelConfig:
    """Architecture and input contract of the value model (everything a checkpoint must agree on)."""

    siglip_variant: str = "So400m/14"
    gemma3_variant: str = "gemma3_270m"
    # Model-side camera keys, in the order their tokens enter the sequence.
    cameras: tuple[str, ...] = _model.IMAGE_KEYS
    image_resolution: tuple[int, int] = _model.IMAGE_RESOLUTION
    prompt_format: PromptFormat = "task"
    max_token_len: int = 48
    num_bins: int = 201
    v_min: float = -1.0
    v_max: float = 0.0
    # Compute dtype of the backbones; trainable parameters are kept in float32.
    dtype: str = "bfloat16"
    freeze_mode: FreezeMode = "all_backbones"
    readout: Readout = "last"
    # Hidden width of the value MLP; 0 means the Gemma3 width.
    head_hidden: int = 0
    # > 0: the normalised state (exactly this many dims) enters as one continuous token through `state_proj`, as
    # pi0's state does; a state-only robot (MetaWorld) is then read precisely by a short sequence instead of ~170
    # prompt bins whose embeddings are learned from scratch. 0: the state is no input of its own (the `task_state`
    # prompt still spells it out in bins). Checkpoints written before this field read as 0.
    state_dim: int = 0

    def __post_init__(self):
        if self.freeze_mode not in FREEZE_MODES:
            raise errors.ConfigError(f"freeze_mode {self.freeze_mode!r} is not one of {FREEZE_MODES}.")
        if self.prompt_format not in PROMPT_FORMATS:
            raise errors.ConfigError(f"prompt_format {self.prompt_format!r} is not one of {PROMPT_FORMATS}.")
        if self.readout not in ("last", "mean"):
            raise errors.ConfigError(f"readout {self.readout!r} is not one of ('last', 'mean').")
        if self.num_bins < 2 or not self.v_min < self.v_max:
            raise errors.ConfigError(
                f"Value bins need num_bins >= 2 and v_min < v_max, got {self.num_bins}, [{self.v_min}, {self.v_max}]."
            )
        if self.state_dim < 0:
            raise errors.ConfigError(f"state_dim must be >= 0 (0: no state token), got {self.state_dim}.")
        if self.state_dim and self.prompt_format == "task_state":
            raise errors.ConfigError(
                "state_dim > 0 feeds the state as a token and prompt_format 'task_state' spells it in the prompt; "
                "pick one (prompt_format 'task' with a state token, or state_dim 0)."
            )
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise errors.ConfigError(f"cameras must be a non-empty list of distinct names, got {self.cameras}.")
        siglip.get_config(self.siglip_variant)  # raises a ConfigError naming the bad variant
        gemma3.get_config(self.gemma3_variant)

    @property
    def llm_config(self) -> gemma3.Gemma3Config:
        return gemma3.get_config(self.gemma3_variant)

    @property
    def num_image_tokens(self) -> int:
        return siglip.num_tokens(self.siglip_variant, self.image_resolution)

    def module(self) -> "ValueModel":
        return ValueModel(self)

    def inputs_spec(self, *, batch_size: int = 1) -> _model.Observation:
        h, w = self.image_resolution
        return _model.Observation(
            images={c: jax.ShapeDtypeStruct((batch_size, h, w, 3), jnp.float32) for c in self.cameras},
            image_masks={c: jax.ShapeDtypeStruct((batch_size,), jnp.bool_) for c in self.cameras},
            state=jax.ShapeDtypeStruct((batch_size, max(self.state_dim, 1)), jnp.float32),
            tokenized_prompt=jax.ShapeDtypeStruct((batch_size, self.max_token_len), jnp.int32),
            tokenized_prompt_mask=jax.ShapeDtypeStruct((batch_size, self.max_token_len), jnp.bool_),
        )

    def fake_obs(self, batch_size: int = 1) -> _model.Observation:
        return jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), self.inputs_spec(batch_size=batch_size))

    def init(self, rng: jax.Array) -> dict:
        """Freshly initialised parameters (pure nested dict: `img`, `llm`, `value_head`)."""
        return jax.jit(self.init_params)(rng)

    def init_params(self, rng: jax.Array) -> dict:
        """Un-jitted `init`, to be traced inside a caller's jit.

        SigLIP's `head` (our projection into Gemma3) is zero-initialised in openpi. Here that would feed exact
        zero vectors into Gemma3's RMS norms, whose gradient at zero is 1/sqrt(eps) per norm (1e3), compounding
        to ~1e36 over the layers; so the projection starts from a LeCun-normal draw instead.
        """
        init_rng, head_rng = jax.random.split(rng)
        params = self.module().init(init_rng, self.fake_obs(1))["params"]
        kernel = params["img"]["head"]["kernel"]
        params["img"]["head"]["kernel"] = nn.initializers.lecun_normal()(head_rng, kernel.shape, kernel.dtype)
        return params

    def abstract_params(self) -> dict:
        """Parameter shapes/dtypes without allocating (jax.eval_shape)."""
        return jax.eval_shape(self.init, jax.random.key(0))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "value model config") -> "ValueModelConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise errors.CheckpointError(f"{source} is not valid JSON ({e}); the checkpoint is damaged.") from e
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise errors.CheckpointError(
                f"{source} has unknown fields {unknown}; it was written by a newer version of this code."
            )
        for key in ("cameras", "image_resolution"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


# ---------------------------------------------------------------------------------------------------------------
# The distributional value head: pure functions.
# ---------------------------------------------------------------------------------------------------------------


def bin_centers(num_bins: int = 201, v_min: float = -1.0, v_max: float = 0.0) -> jax.Array:
    """The `num_bins` atoms, evenly spaced on [v_min, v_max] inclusive (bin width 0.005 for 201 on [-1, 0])."""
    return jnp.linspace(v_min, v_max, num_bins, dtype=jnp.float32)


def two_hot(target, num_bins: int = 201, v_min: float = -1.0, v_max: float = 0.0) -> jax.Array:
    """C51 projection of point targets [...] onto the atoms: [..., num_bins], two non-zero weights summing to 1.

    The target is clipped to [v_min, v_max]; a target on an atom puts all its mass there.
    """
    target = jnp.clip(jnp.asarray(target, jnp.float32), v_min, v_max)
    pos = (target - v_min) / (v_max - v_min) * (num_bins - 1)
    lower = jnp.clip(jnp.floor(pos), 0, num_bins - 1)
    upper_weight = pos - lower
    lower_i = lower.astype(jnp.int32)
    upper_i = jnp.minimum(lower_i + 1, num_bins - 1)
    return (
        jax.nn.one_hot(lower_i, num_bins) * (1.0 - upper_weight)[..., None]
        + jax.nn.one_hot(upper_i, num_bins) * upper_weight[..., None]
    )


def hl_gauss(
    target, num_bins: int = 201, v_min: float = -1.0, v_max: float = 0.0, sigma_bins: float = 0.75
) -> jax.Array:
    """HL-Gauss projection of point targets [...] onto the atoms: [..., num_bins], summing to 1.

    Each atom owns the interval of one bin width around it; its weight is the mass that N(target, sigma) puts
    there, renormalised over [v_min - w/2, v_max + w/2] so that a target at the edge keeps a proper distribution.
    `sigma_bins` is sigma in bin widths: 0.75 is the setting Farebrother et al. (2024) found robust; as it goes to
    0 this tends to the one-hot atom nearest the target. The mean equals the (clipped) target except within a few
    sigma of the two ends, where the truncation shifts it inwards by under 0.7 sigma (about half a bin at the default).
    """
    if sigma_bins <= 0:
        raise errors.ConfigError(f"HL-Gauss sigma must be > 0 bin widths, got {sigma_bins}.")
    target = jnp.clip(jnp.asarray(target, jnp.float32), v_min, v_max)
    width = (v_max - v_min) / (num_bins - 1)
    edges = jnp.linspace(v_min - width / 2, v_max + width / 2, num_bins + 1, dtype=jnp.float32)
    sigma = sigma_bins * width
    cdf = jax.lax.erf((edges - target[..., None]) / (sigma * math.sqrt(2.0)))
    # erf differences far in the tails can come out a rounding error below 0.
    mass = jnp.maximum(cdf[..., 1:] - cdf[..., :-1], 0.0)
    return mass / jnp.sum(mass, axis=-1, keepdims=True)


def target_distribution(
    kind: str, target, num_bins: int = 201, v_min: float = -1.0, v_max: float = 0.0, sigma_bins: float = 0.75
) -> jax.Array:
    """The categorical target of `kind` ("two_hot" or "hl_gauss") for point targets [...]: [..., num_bins]."""
    if kind == "two_hot":
        return two_hot(target, num_bins, v_min, v_max)
    if kind == "hl_gauss":
        return hl_gauss(target, num_bins, v_min, v_max, sigma_bins)
    raise errors.ConfigError(f"value target {kind!r} is not one of {VALUE_TARGETS}.")


def value_loss(
    logits,
    target,
    *,
    v_min: float = -1.0,
    v_max: float = 0.0,
    reduce: bool = True,
    kind: str = "two_hot",
    sigma_bins: float = 0.75,
) -> jax.Array:
    """Cross-entropy between the predicted distribution (logits [..., num_bins]) and the `kind` target of `target`
    (two_hot by default: the C51 projection; see `target_distribution`)."""
    num_bins = logits.shape[-1]
    probs = target_distribution(kind, target, num_bins, v_min, v_max, sigma_bins)
    ce = -jnp.sum(probs * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)
    return jnp.mean(ce) if reduce else ce


def expected_value(logits, v_min: float = -1.0, v_max: float = 0.0) -> jax.Array:
    """Expectation of the predicted distribution over the atoms: [...]."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return probs @ bin_centers(logits.shape[-1], v_min, v_max)


# ---------------------------------------------------------------------------------------------------------------
# Prompt tokenisation.
# ---------------------------------------------------------------------------------------------------------------


def format_value_prompt(prompt_format: str, task: str, state: np.ndarray | None = None) -> str:
    """The value model's prompt text (without BOS) for a given format."""
    text = _tokenizer.clean_text(task)
    if prompt_format == "task":
        return text
    if prompt_format == "task_state":
        if state is None:
            raise errors.ConfigError(
                "prompt_format 'task_state' needs the normalised state; make sure the data pipeline provides `state`."
            )
        return f"Task: {text}, State: {_tokenizer.state_to_text(np.asarray(state, np.float32))};\n"
    raise errors.ConfigError(f"prompt_format {prompt_format!r} is not one of {PROMPT_FORMATS}.")


def tokenize_value_prompt(
    tok: _tokenizer.SentencePieceTokenizer, prompt_format: str, task: str, state: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """BOS + prompt, padded to the tokenizer's max_len: (int32 tokens, bool mask)."""
    return tok.pad(tok.encode(format_value_prompt(prompt_format, task, state), add_bos=True))


# ---------------------------------------------------------------------------------------------------------------
# The module.
# ---------------------------------------------------------------------------------------------------------------


class ValueHead(nn.Module):
    """Readout vector -> hidden (GELU) -> num_bins logits, in float32."""

    hidden: int
    num_bins: int

    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Dense(self.hidden, name="hidden")(x.astype(jnp.float32)))
        return nn.Dense(self.num_bins, name="logits")(x)


class ValueModel(nn.Module):
    config: ValueModelConfig

    def setup(self):
        cfg = self.config
        llm_cfg = cfg.llm_config
        dtype = jnp.dtype(cfg.dtype)
        # `img/head` is SigLIP's own linear head; here it is the projection into the Gemma3 width.
        self.img = siglip.Module(num_classes=llm_cfg.width, variant=cfg.siglip_variant, dtype_mm=cfg.dtype)
        self.llm = gemma3.Gemma3(llm_cfg, dtype=dtype)
        self.value_head = ValueHead(cfg.head_hidden or llm_cfg.width, cfg.num_bins)
        if cfg.state_dim:
            self.state_proj = nn.Dense(llm_cfg.width)

    def embed_images(self, obs: _model.Observation):
        """[B, C*N, width] image tokens and their [B, C*N] validity, SigLIP run once on all cameras."""
        cams = self.config.cameras
        batch = obs.state.shape[0]
        stacked = jnp.concatenate([jnp.asarray(obs.images[c], jnp.float32) for c in cams], axis=0)
        tokens = self.img(stacked)  # [C*B, N, D]
        n, d = tokens.shape[1], tokens.shape[2]
        tokens = tokens.reshape(len(cams), batch, n, d).transpose(1, 0, 2, 3).reshape(batch, len(cams) * n, d)
        masks = jnp.stack([jnp.asarray(obs.image_masks[c], bool) for c in cams], axis=1)  # [B, C]
        return tokens, jnp.repeat(masks, n, axis=1)

    def __call__(self, obs: _model.Observation):
        """Logits [B, num_bins] of the value distribution for a (preprocessed) observation batch."""
        img_tokens, img_mask = self.embed_images(obs)
        txt_tokens = self.llm.embed(obs.tokenized_prompt)
        if self.config.state_dim:
            img_tokens, img_mask = self._append_state_token(obs, img_tokens, img_mask)
        x = jnp.concatenate([img_tokens.astype(txt_tokens.dtype), txt_tokens], axis=1)
        valid = jnp.concatenate([img_mask, jnp.asarray(obs.tokenized_prompt_mask, bool)], axis=1)
        # Block ids: 0 for every image (and state) token (one bidirectional block), 1, 2, ... for prompt tokens.
        n_img, n_txt = img_tokens.shape[1], txt_tokens.shape[1]
        block = jnp.concatenate([jnp.zeros((n_img,), jnp.int32), jnp.arange(1, n_txt + 1, dtype=jnp.int32)])
        attn = (block[None, :] <= block[:, None])[None] & valid[:, None, :] & valid[:, :, None]
        positions = jnp.cumsum(valid, axis=1) - 1
        hidden = self.llm(x, positions, attn)
        if self.config.readout == "last":
            last = x.shape[1] - 1 - jnp.argmax(valid[:, ::-1], axis=1)
            readout = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
        else:
            w = valid.astype(jnp.float32)[..., None]
            readout = jnp.sum(hidden.astype(jnp.float32) * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
        return self.value_head(readout)

    def _append_state_token(self, obs: _model.Observation, tokens, mask):
        """[B, N+1, width] tokens: the image tokens, then the projected state (always valid)."""
        state = jnp.asarray(obs.state, jnp.float32)
        if state.ndim != 2 or state.shape[-1] != self.config.state_dim:
            raise errors.ConfigError(
                f"The value model takes a {self.config.state_dim}-dim state but the batch has shape {state.shape}; "
                "set the value config's model.state_dim to the dataset's state size."
            )
        token = self.state_proj(state).astype(tokens.dtype)[:, None]
        return jnp.concatenate([tokens, token], axis=1), jnp.concatenate([mask, jnp.ones_like(mask[:, :1])], axis=1)


def count_params(tree: Any) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def tiny_config(**overrides: Any) -> ValueModelConfig:
    """The value model the value-training and relabelling tests share: SigLIP mu/16 at 32 px, the dummy Gemma3,
    two cameras, mean readout (override any field, e.g. `cameras` or `freeze_mode`). Here, not in
    `shared.testing`, because the shared layer sits below models."""
    fields = {
        "siglip_variant": "mu/16",
        "gemma3_variant": "dummy",
        "image_resolution": (32, 32),
        "max_token_len": 16,
        "dtype": "float32",
        "cameras": ("base_0_rgb", "left_wrist_0_rgb"),
        "readout": "mean",
    }
    return ValueModelConfig(**{**fields, **overrides})
