"""Numerics of the dummy-size pi0 / pi0.5 model: training signal, KV cache, prefix-LM mask, classifier-free guidance."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from openpi.models import model as _model
from openpi.models import pi0
from openpi.models import pi0_config

HORIZON = 8
PROMPT_LEN = 12


def _config(**kw) -> pi0_config.Pi0Config:
    base = {
        "paligemma_variant": "dummy",
        "action_expert_variant": "dummy",
        "dtype": "float32",
        "action_horizon": HORIZON,
        "max_token_len": PROMPT_LEN,
    }
    return pi0_config.Pi0Config(**{**base, **kw})


@functools.cache
def _setup(**kw):
    cfg = _config(**kw)
    model = cfg.model()
    params = jax.jit(model.init_params)(jax.random.key(0))
    return cfg, model, params


def _sample_actions_reference(
    model: pi0.Pi0, params, rng: jax.Array, observation: _model.Observation, *, num_steps: int = 10, noise=None
) -> jax.Array:
    """Uncached sampling: every step runs the full prefix + suffix pass. Slow; the cached path is checked against it."""
    model._check(observation)
    obs = model._preprocess(None, observation, train=False)
    module, variables = model.module, {"params": params}
    dt = -1.0 / num_steps

    def step(i, x_t):
        t = jnp.full((obs.batch_size,), 1.0 + i * dt, jnp.float32)
        v, _ = module.apply(variables, obs, x_t, t, method=pi0.Pi0Module.forward)
        return x_t + dt * v

    return jax.lax.fori_loop(0, num_steps, step, model._noise(rng, obs.batch_size, noise))


@functools.cache
def _jitted(name: str, **kw):
    """One jitted function per (model method, config): tests share compilations."""
    _, model, _ = _setup(**kw)
    fns = {
        "sample": functools.partial(model.sample_actions, num_steps=4),
        "reference": functools.partial(_sample_actions_reference, model, num_steps=4),
        "prefix": model.prefix_outputs,
    }
    return jax.jit(fns[name])


def _prompt(rng: np.random.Generator, batch: int, valid: int):
    tokens = rng.integers(3, 2000, size=(batch, PROMPT_LEN)).astype(np.int32)
    mask = np.arange(PROMPT_LEN)[None, :] < valid
    return np.where(mask, tokens, 0), np.broadcast_to(mask, (batch, PROMPT_LEN)).copy()


def _batch(cfg, batch: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = {k: rng.uniform(-1, 1, size=(batch, 224, 224, 3)).astype(np.float32) for k in _model.IMAGE_KEYS}
    masks = {k: np.ones((batch,), bool) for k in _model.IMAGE_KEYS}
    masks["right_wrist_0_rgb"][0] = False
    prompt, prompt_mask = _prompt(rng, batch, valid=9)
    obs = _model.Observation(
        images=images,
        image_masks=masks,
        state=rng.normal(size=(batch, cfg.action_dim)).astype(np.float32),
        tokenized_prompt=prompt,
        tokenized_prompt_mask=prompt_mask,
    )
    actions = rng.normal(size=(batch, HORIZON, cfg.action_dim)).astype(np.float32)
    return obs, actions


def _with_random_params(params, seed=1, scale=0.05):
    """Perturbs every weight so zero-initialised parts (adaRMS gates, SigLIP head) carry signal in the checks."""
    rng = np.random.default_rng(seed)  # numpy: one jax.random call per leaf shape would compile ~70 kernels
    return jax.tree.map(lambda x: x + scale * rng.standard_normal(x.shape, dtype=np.float32), params)


def test_overfits_one_batch_in_train_mode():
    cfg, model, params = _setup(pi05=True)
    obs, actions = _batch(cfg)
    rng = jax.random.key(3)  # fixed noise, time and augmentation: one fixed batch
    tx = optax.adamw(3e-3, b1=0.9, b2=0.95, weight_decay=1e-10)
    # The 257152 x 64 token table dominates a dummy step on CPU (dense gradient + Adam on 16M floats) and random
    # prompt tokens teach it nothing, so it stays fixed here; every other weight trains.
    llm = params["PaliGemma"]["llm"]
    table = llm["embedder"]
    rest = {**params, "PaliGemma": {**params["PaliGemma"], "llm": {k: v for k, v in llm.items() if k != "embedder"}}}

    def full(rest):
        return {**rest, "PaliGemma": {**rest["PaliGemma"], "llm": {**rest["PaliGemma"]["llm"], "embedder": table}}}

    def loss_fn(rest):
        per_step = model.compute_loss(full(rest), rng, obs, actions, train=True)
        return jnp.mean(per_step), per_step

    @jax.jit
    def step(rest, opt_state):
        (loss, per_step), grads = jax.value_and_grad(loss_fn, has_aux=True)(rest)
        updates, opt_state = tx.update(grads, opt_state, rest)
        return optax.apply_updates(rest, updates), opt_state, loss, per_step

    opt_state = tx.init(rest)
    losses = []
    for _ in range(200):
        rest, opt_state, loss, per_step = step(rest, opt_state)
        assert per_step.shape == (2, HORIZON) and per_step.dtype == jnp.float32
        losses.append(float(loss))
        if losses[0] / losses[-1] > 10.0:  # clearly past the 5x bar: stop early to save CPU
            break
    assert np.all(np.isfinite(losses))
    assert losses[0] / min(losses[-10:]) > 5.0, (losses[0], losses[-10:])


@pytest.mark.parametrize("pi05", [True, False], ids=["pi05", "pi0"])
def test_cached_sampling_equals_uncached_reference(pi05):
    cfg, _, params = _setup(pi05=pi05)
    params = _with_random_params(params)
    obs, _ = _batch(cfg, seed=4)
    noise = jax.random.normal(jax.random.key(5), (2, HORIZON, cfg.action_dim))
    cached = _jitted("sample", pi05=pi05)(params, jax.random.key(0), obs, noise=noise)
    reference = _jitted("reference", pi05=pi05)(params, jax.random.key(0), obs, noise=noise)
    assert cached.shape == (2, HORIZON, cfg.action_dim)
    np.testing.assert_allclose(cached, reference, atol=2e-5, rtol=1e-4)
    assert not np.allclose(cached, noise, atol=1e-3)  # the flow actually moved the sample


@pytest.mark.parametrize("pi05", [True, False], ids=["pi05", "pi0"])
def test_prefix_cannot_see_suffix(pi05):
    cfg, _, params = _setup(pi05=pi05)
    params = _with_random_params(params)
    obs, actions = _batch(cfg, seed=6)
    prefix = _jitted("prefix", pi05=pi05)
    # Only valid prefix tokens are checked: a padding token (here the masked right-wrist camera of sample 0)
    # attends to nothing valid, so its output is meaningless and never read by anything.
    valid = np.concatenate(
        [np.repeat(obs.image_masks[k][:, None], 49, axis=1) for k in _model.IMAGE_KEYS] + [obs.tokenized_prompt_mask],
        axis=1,
    )
    assert not valid.all()
    a = prefix(params, obs, actions, jnp.full((2,), 0.3))
    obs_other_state = obs.replace(state=obs.state + 5.0)  # pi0's state token is part of the suffix
    b = prefix(params, obs_other_state, -3.0 * actions, jnp.full((2,), 0.9))
    np.testing.assert_array_equal(np.asarray(a)[valid], np.asarray(b)[valid])
    # ... while changing the prefix does change it (the check can fail).
    obs_other_prompt = obs.replace(tokenized_prompt=obs.tokenized_prompt + 1)
    c = prefix(params, obs_other_prompt, actions, jnp.full((2,), 0.3))
    assert not np.allclose(np.asarray(a)[valid], np.asarray(c)[valid])


def test_classifier_free_guidance_limits():
    cfg, _, params = _setup(pi05=True)
    params = _with_random_params(params)
    obs, _ = _batch(cfg, seed=7)
    uncond, uncond_mask = _prompt(np.random.default_rng(8), 2, valid=6)
    noise = jax.random.normal(jax.random.key(9), (2, HORIZON, cfg.action_dim))
    sample = _jitted("sample", pi05=True)
    key = jax.random.key(0)
    conditional = sample(params, key, obs, noise=noise)
    unconditional = sample(
        params, key, obs.replace(tokenized_prompt=uncond, tokenized_prompt_mask=uncond_mask), noise=noise
    )
    assert not np.allclose(conditional, unconditional, atol=1e-4)

    def guided(beta):
        return sample(
            params,
            key,
            obs,
            noise=noise,
            cfg_beta=beta,
            uncond_tokenized_prompt=uncond,
            uncond_tokenized_prompt_mask=uncond_mask,
        )

    np.testing.assert_allclose(guided(1.0), conditional, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(guided(0.0), unconditional, atol=2e-5, rtol=1e-4)
    strong = guided(2.0)
    assert not np.allclose(strong, conditional, atol=1e-4)


def test_guidance_needs_all_three_arguments():
    cfg, model, params = _setup(pi05=True)
    obs, _ = _batch(cfg)
    with pytest.raises(_model.ObservationError, match="guidance"):
        model.sample_actions(params, jax.random.key(0), obs, cfg_beta=2.0)


def test_wrong_shapes_raise_clear_errors():
    cfg, model, params = _setup(pi05=True)
    obs, actions = _batch(cfg)
    bad_image = dict(obs.images, base_0_rgb=np.zeros((2, 224, 224), np.float32))
    with pytest.raises(_model.ObservationError, match="base_0_rgb"):
        model.compute_loss(params, jax.random.key(0), obs.replace(images=bad_image), actions)
    with pytest.raises(_model.ObservationError, match=r"\[2, 8, 32\]"):
        model.compute_loss(params, jax.random.key(0), obs, actions[:, :3])
    with pytest.raises(_model.ObservationError, match="action_dim"):
        model.sample_actions(params, jax.random.key(0), obs.replace(state=obs.state[:, :14]))


def test_lora_training_moves_only_trainable_weights():
    cfg, model, params = _setup(pi05=True, paligemma_variant="dummy_lora", action_expert_variant="dummy_lora")
    # Fresh pi0.5 adaRMS gates are zero, which would cut every LLM gradient; perturb to get a generic point.
    params = _with_random_params(params)
    assert "lora_a" in params["PaliGemma"]["llm"]["layers"]["attn"]["q_einsum"]
    obs, actions = _batch(cfg)
    mask = cfg.trainable_mask(params)
    tx = optax.multi_transform({True: optax.adam(1e-2), False: optax.set_to_zero()}, jax.tree.map(lambda m: m, mask))

    @jax.jit
    def step(params):
        grads = jax.grad(lambda p: jnp.mean(model.compute_loss(p, jax.random.key(0), obs, actions)))(params)
        updates, _ = tx.update(grads, tx.init(params), params)
        return optax.apply_updates(params, updates)

    new = step(params)
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), params, new)
    flat = {pi0_config.path_str(p): c for p, c in jax.tree_util.tree_flatten_with_path(changed)[0]}
    llm_changed = {p for p, c in flat.items() if c and "/llm/" in p}
    assert llm_changed and all("lora" in p for p in llm_changed)
    assert flat["action_in_proj/kernel"]
