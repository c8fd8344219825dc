"""The pi0 / pi0.5 / pi0.6 flow-matching policy: linen modules plus a small functional facade.

Prefix (images through SigLIP, prompt tokens) and suffix (pi0: a state token; then the noisy action chunk) run
through the two-expert Gemma with a prefix-LM mask: the prefix is one bidirectional block, the suffix attends to
the prefix and to itself, and the prefix never sees the suffix. That is what allows sampling to compute the
prefix once into a KV cache and re-run only the suffix at every Euler step.

Conventions follow openpi: t = 1 is noise and t = 0 the data; x_t = t * noise + (1 - t) * actions and the model
predicts the velocity u = noise - actions. Params are pure nested dicts (`Pi0.init_params`), so checkpoints are
interchangeable with openpi's.
"""

from collections.abc import Sequence
import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from openpi.models import gemma
from openpi.models import model as _model
from openpi.models import siglip
from openpi.models.pi0_config import Pi0Config


def make_attn_mask(input_mask, mask_ar):
    """Attention mask [B, N, N] from validity [B, N] and block starts `mask_ar` [N] or [B, N].

    A token attends to every valid token whose cumulative `mask_ar` count is <= its own: all-False gives one
    bidirectional block, all-True causal attention, and a True opens a new block that earlier tokens cannot see.
    """
    mask_ar = jnp.broadcast_to(mask_ar, input_mask.shape)
    cumsum = jnp.cumsum(mask_ar, axis=1)
    attn = cumsum[:, None, :] <= cumsum[:, :, None]
    valid = input_mask[:, None, :] & input_mask[:, :, None]
    return attn & valid


def posemb_sincos(pos, embedding_dim: int, min_period: float, max_period: float):
    """Sine-cosine embedding [B, D] of scalar positions [B] with periods spaced geometrically in [min, max]."""
    if embedding_dim % 2:
        raise ValueError(f"embedding_dim ({embedding_dim}) must be even.")
    fraction = jnp.linspace(0.0, 1.0, embedding_dim // 2)
    period = min_period * (max_period / min_period) ** fraction
    angle = jnp.einsum("i,j->ij", pos, 2 * jnp.pi / period, precision=jax.lax.Precision.HIGHEST)
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


class _PaliGemma(nn.Module):
    """Holds `llm` and `img` so that the parameter tree reads `PaliGemma/llm/...` and `PaliGemma/img/...`."""

    config: Pi0Config

    def setup(self):
        c = self.config
        pg, ae = gemma.get_config(c.paligemma_variant), gemma.get_config(c.action_expert_variant)
        self.llm = gemma.Module(
            configs=(pg, ae),
            embed_dtype=c.dtype,
            use_adarms=(False, c.pi05),
            remat=c.remat,
            vocab_size=c.vocab_size,
            unroll_layers=c.unroll_layers,
        )
        self.img = siglip.Module(
            num_classes=pg.width, variant=c.siglip_variant, dtype_mm=c.dtype, remat=c.remat, posemb=c.siglip_posemb
        )


class Pi0Module(nn.Module):
    """The network. Use it through `Pi0` (below), which handles preprocessing, noise and the sampling loop."""

    config: Pi0Config

    def setup(self):
        c = self.config
        width = gemma.get_config(c.action_expert_variant).width
        self.PaliGemma = _PaliGemma(c)
        self.action_in_proj = nn.Dense(width, name="action_in_proj")
        if c.pi05:
            self.time_mlp_in = nn.Dense(width, name="time_mlp_in")
            self.time_mlp_out = nn.Dense(width, name="time_mlp_out")
        else:
            self.state_proj = nn.Dense(width, name="state_proj")
            self.action_time_mlp_in = nn.Dense(width, name="action_time_mlp_in")
            self.action_time_mlp_out = nn.Dense(width, name="action_time_mlp_out")
        self.action_out_proj = nn.Dense(c.action_dim, name="action_out_proj")

    # -- prefix ---------------------------------------------------------------------------------------------------

    def embed_images(self, obs: _model.Observation):
        """Image tokens [B, n_cam * n_tok, D] and their mask; all cameras go through SigLIP in one batched call."""
        keys = list(obs.images)
        batch = obs.state.shape[0]
        stacked = jnp.concatenate([obs.images[k] for k in keys], axis=0)
        tokens = self.PaliGemma.img(stacked)
        n_tok = tokens.shape[1]
        tokens = tokens.reshape(len(keys), batch, n_tok, -1).transpose(1, 0, 2, 3).reshape(batch, len(keys) * n_tok, -1)
        mask = jnp.concatenate([jnp.repeat(obs.image_masks[k][:, None], n_tok, axis=1) for k in keys], axis=1)
        return tokens, mask

    def embed_prompt(self, tokenized_prompt):
        return self.PaliGemma.llm.embed(tokenized_prompt)

    def embed_prefix(self, obs: _model.Observation):
        """(tokens [B, P, D], valid [B, P], block starts [P]); images and prompt form one bidirectional block."""
        tokens, mask = self.embed_images(obs)
        if obs.tokenized_prompt is not None:
            text = self.embed_prompt(obs.tokenized_prompt)
            tokens = jnp.concatenate([tokens.astype(text.dtype), text], axis=1)
            mask = jnp.concatenate([mask, jnp.asarray(obs.tokenized_prompt_mask, bool)], axis=1)
        return tokens, mask, jnp.zeros((tokens.shape[1],), dtype=bool)

    # -- suffix ---------------------------------------------------------------------------------------------------

    def embed_suffix(self, state, noisy_actions, timestep):
        """(tokens [B, S, D], valid [B, S], block starts [S], adaRMS condition [B, D] or None)."""
        c = self.config
        tokens, ar = [], []
        if not c.pi05:
            tokens.append(self.state_proj(state)[:, None, :])
            ar.append(True)
        action_tokens = self.action_in_proj(noisy_actions)
        width = action_tokens.shape[-1]
        time_emb = posemb_sincos(timestep, width, min_period=4e-3, max_period=4.0)
        if c.pi05:
            cond = nn.swish(self.time_mlp_out(nn.swish(self.time_mlp_in(time_emb))))
            tokens.append(action_tokens)
        else:
            time_tokens = jnp.broadcast_to(time_emb[:, None, :], action_tokens.shape)
            mixed = self.action_time_mlp_in(jnp.concatenate([action_tokens, time_tokens], axis=-1))
            tokens.append(self.action_time_mlp_out(nn.swish(mixed)))
            cond = None
        ar += [True] + [False] * (c.action_horizon - 1)
        tokens = jnp.concatenate(tokens, axis=1)
        mask = jnp.ones(tokens.shape[:2], dtype=bool)
        return tokens, mask, jnp.asarray(ar), cond

    def velocity(self, suffix_out):
        """Action-expert outputs of the last `action_horizon` tokens -> velocity [B, H, action_dim] in float32."""
        out = self.action_out_proj(suffix_out[:, -self.config.action_horizon :].astype(jnp.float32))
        return out.astype(jnp.float32)

    # -- passes ---------------------------------------------------------------------------------------------------

    def forward(self, obs: _model.Observation, noisy_actions, timestep):
        """One joint pass over prefix + suffix (training, and the uncached reference). Returns (v_t, prefix_out)."""
        prefix, prefix_mask, prefix_ar = self.embed_prefix(obs)
        suffix, suffix_mask, suffix_ar, cond = self.embed_suffix(obs.state, noisy_actions, timestep)
        input_mask = jnp.concatenate([prefix_mask, suffix_mask], axis=1)
        attn_mask = make_attn_mask(input_mask, jnp.concatenate([prefix_ar, suffix_ar]))
        positions = jnp.cumsum(input_mask, axis=1) - 1
        (prefix_out, suffix_out), _ = self.PaliGemma.llm([prefix, suffix], positions, attn_mask, [None, cond])
        return self.velocity(suffix_out), prefix_out

    def fill_cache(self, obs: _model.Observation, uncond_prompt=None, uncond_prompt_mask=None):
        """Runs the prefix once; returns (KV cache, prefix valid mask, prefix outputs).

        With an unconditional prompt the batch doubles to [cond; uncond]: image tokens are computed once and
        shared, the two prompts differ, and one LLM pass fills the cache for both halves.
        """
        images, image_mask = self.embed_images(obs)
        tokens, mask = images, image_mask
        if obs.tokenized_prompt is not None:
            text = self.embed_prompt(obs.tokenized_prompt)
            text_mask = jnp.asarray(obs.tokenized_prompt_mask, bool)
            if uncond_prompt is not None:
                text = jnp.concatenate([text, self.embed_prompt(uncond_prompt)], axis=0)
                text_mask = jnp.concatenate([text_mask, jnp.asarray(uncond_prompt_mask, bool)], axis=0)
                images = jnp.concatenate([images, images], axis=0)
                image_mask = jnp.concatenate([image_mask, image_mask], axis=0)
            tokens = jnp.concatenate([images.astype(text.dtype), text], axis=1)
            mask = jnp.concatenate([image_mask, text_mask], axis=1)
        attn_mask = make_attn_mask(mask, jnp.zeros((tokens.shape[1],), dtype=bool))
        positions = jnp.cumsum(mask, axis=1) - 1
        (prefix_out, _), kv_cache = self.PaliGemma.llm([tokens, None], positions, attn_mask)
        return kv_cache, mask, prefix_out

    def cached_velocity(self, state, noisy_actions, timestep, kv_cache, prefix_mask):
        """Runs only the suffix against a filled KV cache; returns v_t [B, H, action_dim]."""
        suffix, suffix_mask, suffix_ar, cond = self.embed_suffix(state, noisy_actions, timestep)
        prefix_part = jnp.broadcast_to(
            prefix_mask[:, None, :], (suffix.shape[0], suffix.shape[1], prefix_mask.shape[1])
        )
        attn_mask = jnp.concatenate([prefix_part, make_attn_mask(suffix_mask, suffix_ar)], axis=-1)
        positions = jnp.sum(prefix_mask, axis=-1)[:, None] + jnp.cumsum(suffix_mask, axis=1) - 1
        (_, suffix_out), _ = self.PaliGemma.llm([None, suffix], positions, attn_mask, [None, cond], kv_cache=kv_cache)
        return self.velocity(suffix_out)

    def init_all(self, obs: _model.Observation, actions):
        """Touches every weight (linen creates params lazily)."""
        self.PaliGemma.llm.init_all()
        return self.forward(obs, actions, jnp.ones((actions.shape[0],), jnp.float32))


@dataclasses.dataclass(frozen=True)
class Pi0:
    """Stateless facade: every method is a pure function of (params, rng, inputs), ready for `jax.jit`."""

    config: Pi0Config

    @property
    def module(self) -> Pi0Module:
        return Pi0Module(self.config)

    def init_params(self, rng: jax.Array) -> _model.Params:
        obs, act = self.config.fake_obs(1), self.config.fake_act(1)
        variables = self.module.init(rng, obs, act, method=Pi0Module.init_all)
        return flax.core.unfreeze(variables["params"])  # plain nested dicts, as openpi checkpoints

    def _preprocess(self, rng, observation: _model.Observation, *, train: bool) -> _model.Observation:
        c = self.config
        return _model.preprocess_observation(
            rng,
            observation,
            train=train and c.augment_images,
            image_keys=c.image_keys,
            image_resolution=c.image_resolution,
        )

    def _check(self, observation: _model.Observation, actions=None) -> None:
        c = self.config
        _model.check_observation(
            observation, image_keys=c.image_keys, state_dim=c.action_dim, max_token_len=c.max_token_len
        )
        if actions is not None:
            _model.check_actions(
                actions, batch_size=observation.batch_size, action_horizon=c.action_horizon, action_dim=c.action_dim
            )

    def compute_loss(
        self, params: _model.Params, rng: jax.Array, observation: _model.Observation, actions, *, train: bool = False
    ) -> jax.Array:
        """Flow-matching loss per sample and action step, [B, H] (mean over the action dimension)."""
        self._check(observation, actions)
        preprocess_rng, noise_rng, time_rng = jax.random.split(rng, 3)
        obs = self._preprocess(preprocess_rng, observation, train=train)
        actions = jnp.asarray(actions, jnp.float32)
        batch_shape = actions.shape[:-2]
        noise = jax.random.normal(noise_rng, actions.shape)
        time = jax.random.beta(time_rng, 1.5, 1.0, batch_shape) * 0.999 + 0.001
        t = time[..., None, None]
        x_t = t * noise + (1 - t) * actions
        u_t = noise - actions
        v_t, _ = self.module.apply({"params": params}, obs, x_t, time, method=Pi0Module.forward)
        return jnp.mean(jnp.square(v_t - u_t), axis=-1)

    def prefix_outputs(self, params: _model.Params, observation: _model.Observation, noisy_actions, timestep):
        """Prefix activations of a joint prefix + suffix pass (for checking that the prefix ignores the suffix)."""
        obs = self._preprocess(None, observation, train=False)
        _, prefix_out = self.module.apply({"params": params}, obs, noisy_actions, timestep, method=Pi0Module.forward)
        return prefix_out

    def _noise(self, rng, batch: int, noise):
        c = self.config
        if noise is None:
            return jax.random.normal(rng, (batch, c.action_horizon, c.action_dim))
        noise = jnp.asarray(noise, jnp.float32)
        _model.check_actions(noise, batch_size=batch, action_horizon=c.action_horizon, action_dim=c.action_dim)
        return noise

    def sample_actions(
        self,
        params: _model.Params,
        rng: jax.Array,
        observation: _model.Observation,
        *,
        num_steps: int | jax.Array = 10,
        noise=None,
        cfg_beta: float | jax.Array | None = None,
        uncond_tokenized_prompt=None,
        uncond_tokenized_prompt_mask=None,
    ) -> jax.Array:
        """Euler-integrates the flow from t = 1 (noise) to t = 0; returns actions [B, H, action_dim].

        The prefix is computed once into a KV cache; each of the `num_steps` steps re-runs only the suffix.
        With `cfg_beta` (β) and the unconditional prompt, classifier-free guidance runs conditional and
        unconditional in one doubled batch: v = v_uncond + beta * (v_cond - v_uncond).
        """
        self._check(observation)
        guided = cfg_beta is not None
        if guided != (uncond_tokenized_prompt is not None) or (
            (uncond_tokenized_prompt is None) != (uncond_tokenized_prompt_mask is None)
        ):
            raise _model.ObservationError(
                "Classifier-free guidance needs cfg_beta, uncond_tokenized_prompt and "
                "uncond_tokenized_prompt_mask together; pass all three or none."
            )
        obs = self._preprocess(None, observation, train=False)
        batch = obs.batch_size
        x = self._noise(rng, batch, noise)
        uncond = uncond_mask = None
        if guided:
            if obs.tokenized_prompt is None:
                raise _model.ObservationError("Classifier-free guidance needs the conditional tokenized_prompt.")
            cond, cond_mask, uncond, uncond_mask = _pad_prompts(
                obs.tokenized_prompt, obs.tokenized_prompt_mask, uncond_tokenized_prompt, uncond_tokenized_prompt_mask
            )
            if uncond.shape[0] != batch:
                raise _model.ObservationError(
                    f"uncond_tokenized_prompt has batch {uncond.shape[0]}; expected {batch} like the observation."
                )
            obs = dataclasses.replace(obs, tokenized_prompt=cond, tokenized_prompt_mask=cond_mask)
        module, variables = self.module, {"params": params}
        kv_cache, prefix_mask, _ = module.apply(variables, obs, uncond, uncond_mask, method=Pi0Module.fill_cache)
        state = jnp.concatenate([obs.state, obs.state], axis=0) if guided else obs.state
        dt = -1.0 / num_steps

        def step(i, x_t):
            time = 1.0 + i * dt
            x_in = jnp.concatenate([x_t, x_t], axis=0) if guided else x_t
            t = jnp.broadcast_to(jnp.asarray(time, jnp.float32), (x_in.shape[0],))
            v = module.apply(variables, state, x_in, t, kv_cache, prefix_mask, method=Pi0Module.cached_velocity)
            if guided:
                v_cond, v_uncond = jnp.split(v, 2, axis=0)
                v = v_uncond + cfg_beta * (v_cond - v_uncond)
            return x_t + dt * v

        return jax.lax.fori_loop(0, num_steps, step, x)


def _pad_prompts(cond, cond_mask, uncond, uncond_mask) -> Sequence[Any]:
    """Pads the shorter of the two prompt batches with (0, False) so both have one length."""
    cond, uncond = jnp.asarray(cond, jnp.int32), jnp.asarray(uncond, jnp.int32)
    cond_mask, uncond_mask = jnp.asarray(cond_mask, bool), jnp.asarray(uncond_mask, bool)
    if uncond.ndim != 2 or uncond_mask.shape != uncond.shape:
        raise _model.ObservationError(
            f"uncond_tokenized_prompt has shape {uncond.shape} and mask {uncond_mask.shape}; expected both [B, L]."
        )
    length = max(cond.shape[1], uncond.shape[1])

    def pad(tokens, mask):
        extra = length - tokens.shape[1]
        return jnp.pad(tokens, ((0, 0), (0, extra))), jnp.pad(mask, ((0, 0), (0, extra)))

    return (*pad(cond, cond_mask), *pad(uncond, uncond_mask))
