import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openpi.models import gemma3
from openpi.models import siglip
from openpi.models import tokenizer as _tokenizer
from openpi.models import value_model as vm
from openpi.shared import errors

TINY = vm.ValueModelConfig(
    siglip_variant="mu/32",
    gemma3_variant="dummy",
    image_resolution=(64, 64),
    max_token_len=12,
    dtype="float32",
    cameras=("base_0_rgb", "left_wrist_0_rgb"),
)


@pytest.fixture(scope="module")
def tiny_params():
    params = TINY.init(jax.random.key(0))
    # The projection into Gemma3 is not zero-initialised (unlike openpi's SigLIP head): images matter from step 0.
    assert np.abs(params["img"]["head"]["kernel"]).max() > 0
    return params


def test_two_hot_projection():
    centers = np.asarray(vm.bin_centers())
    assert centers.shape == (201,) and centers[0] == -1.0 and centers[-1] == 0.0
    np.testing.assert_allclose(np.diff(centers), 0.005, atol=1e-6)
    th = np.asarray(vm.two_hot(jnp.array([-0.5, -0.5025, -1.7, 0.4, -0.0001, -1.0])))
    assert th.shape == (6, 201)
    np.testing.assert_allclose(th.sum(-1), 1.0, atol=1e-6)
    assert th[0, 100] == pytest.approx(1.0)  # on an atom: all mass there
    assert th[1, 99] == pytest.approx(0.5, abs=1e-4) and th[1, 100] == pytest.approx(0.5, abs=1e-4)
    assert th[2, 0] == 1.0 and th[3, 200] == 1.0  # clipped to [-1, 0]
    assert th[4, 199] == pytest.approx(0.02, abs=1e-3) and th[4, 200] == pytest.approx(0.98, abs=1e-3)
    assert (th > 0).sum(-1).max() <= 2
    # The projection preserves the (clipped) mean.
    targets = np.random.default_rng(0).uniform(-1.2, 0.2, size=64)
    np.testing.assert_allclose(np.asarray(vm.two_hot(targets)) @ centers, np.clip(targets, -1, 0), atol=1e-5)


def test_loss_and_expected_value():
    targets = jnp.array([-0.9, -0.25, 0.0])
    uniform = jnp.zeros((3, 201))
    assert float(vm.value_loss(uniform, targets)) == pytest.approx(math.log(201), rel=1e-5)
    np.testing.assert_allclose(vm.expected_value(uniform), -0.5, atol=1e-6)
    # Logits equal to log(two_hot) give the minimum loss (the target entropy) and recover the target.
    perfect = jnp.log(vm.two_hot(targets) + 1e-12)
    np.testing.assert_allclose(vm.expected_value(perfect), targets, atol=1e-5)
    ce = vm.value_loss(perfect, targets, reduce=False)
    p = vm.two_hot(targets)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0), -1)
    np.testing.assert_allclose(ce, entropy, atol=1e-4)
    grad = jax.grad(lambda lg: vm.value_loss(lg, targets))(uniform)
    assert np.abs(np.asarray(grad)).max() > 0


def test_full_size_param_count():
    full = vm.ValueModelConfig()
    shapes = full.abstract_params()
    counts = {k: vm.count_params(v) for k, v in shapes.items()}
    # Gemma3-270M exactly as released; SigLIP So400m/14 (no MAP head) with a 1152 -> 640 projection.
    assert counts["llm"] == 268_098_176
    so400m_head_to_640 = 413_180_272
    assert counts["img"] == so400m_head_to_640
    assert shapes["img"]["head"]["kernel"].shape == (1152, 640)
    assert shapes["img"]["pos_embedding"].shape == (1, 256, 1152)
    assert counts["value_head"] == 640 * 640 + 640 + 640 * 201 + 201
    assert vm.count_params(shapes) == 681_817_529
    assert full.num_image_tokens == 256


def _inputs(cfg, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    h, w = cfg.image_resolution
    images = {c: jnp.asarray(rng.uniform(-1, 1, (batch, h, w, 3)), jnp.float32) for c in cfg.cameras}
    masks = {c: jnp.ones((batch,), bool) for c in cfg.cameras}
    tokens = jnp.asarray(rng.integers(4, 500, (batch, cfg.max_token_len)), jnp.int32)
    tmask = jnp.asarray(np.arange(cfg.max_token_len)[None] < np.array([[7], [10]])[:batch])
    from openpi.models import model as _model

    return _model.Observation(
        images=images,
        image_masks=masks,
        state=jnp.asarray(rng.uniform(-1, 1, (batch, cfg.state_dim or 14)), jnp.float32),
        tokenized_prompt=tokens,
        tokenized_prompt_mask=tmask,
    )


def test_forward_masks_and_readout(tiny_params):
    cfg, params = TINY, tiny_params
    apply = jax.jit(cfg.module().apply)
    obs = _inputs(cfg)
    out = apply({"params": params}, obs)
    assert out.shape == (2, 201) and np.all(np.isfinite(out))

    def changed(**kw):
        return apply({"params": params}, dataclasses.replace(obs, **kw))

    # Padding tokens (mask False) do not matter.
    np.testing.assert_allclose(changed(tokenized_prompt=obs.tokenized_prompt.at[:, 11].set(7)), out, atol=1e-5)
    # The last valid prompt token does.
    assert np.abs(changed(tokenized_prompt=obs.tokenized_prompt.at[0, 6].set(3)) - out)[0].max() > 1e-4
    # Each camera's image matters; a masked camera does not.
    new_wrist = {**obs.images, "left_wrist_0_rgb": -obs.images["left_wrist_0_rgb"]}
    assert np.abs(changed(images=new_wrist) - out).max() > 1e-4
    masked = {**obs.image_masks, "left_wrist_0_rgb": jnp.zeros((2,), bool)}
    a = changed(image_masks=masked)
    b = changed(image_masks=masked, images=new_wrist)
    np.testing.assert_allclose(a, b, atol=1e-5)
    # Batch items are independent.
    np.testing.assert_allclose(apply({"params": params}, jax.tree.map(lambda x: x[1:], obs))[0], out[1], atol=1e-4)


def test_mean_readout(tiny_params):
    cfg = dataclasses.replace(TINY, readout="mean")
    obs = _inputs(cfg)
    apply = jax.jit(cfg.module().apply)
    out = apply({"params": tiny_params}, obs)
    assert out.shape == (2, 201) and out.dtype == jnp.float32 and np.all(np.isfinite(out))
    # Padding still does not matter; every valid token does.
    np.testing.assert_allclose(
        apply(
            {"params": tiny_params}, dataclasses.replace(obs, tokenized_prompt=obs.tokenized_prompt.at[:, 11].set(7))
        ),
        out,
        atol=1e-5,
    )


def test_state_token_reads_the_state_even_with_every_camera_masked():
    """`state_dim` > 0: the state is one token through `state_proj` (MetaWorld: no camera, masked black slots)."""
    cfg = dataclasses.replace(TINY, cameras=("base_0_rgb",), state_dim=5)
    params = cfg.init(jax.random.key(1))
    assert params["state_proj"]["kernel"].shape == (5, 64)
    assert "state_proj" not in TINY.abstract_params()
    apply = jax.jit(cfg.module().apply)
    obs = _inputs(cfg)
    obs = dataclasses.replace(obs, image_masks={"base_0_rgb": jnp.zeros((2,), bool)})
    out = apply({"params": params}, obs)
    assert out.shape == (2, 201) and np.all(np.isfinite(out))
    # Another state moves the value; only through the state token, since every camera is masked.
    moved = apply({"params": params}, dataclasses.replace(obs, state=obs.state.at[0, 3].add(0.5)))
    assert np.abs(moved - out)[0].max() > 1e-4
    np.testing.assert_allclose(moved[1], out[1], atol=1e-5)
    # A batch whose state has another size is refused by name, not broadcast.
    with pytest.raises(errors.ConfigError, match="5-dim state"):
        apply({"params": params}, dataclasses.replace(obs, state=jnp.zeros((2, 4))))
    assert cfg.inputs_spec(batch_size=3).state.shape == (3, 5)


def test_config_json_round_trip_and_validation():
    cfg = dataclasses.replace(TINY, prompt_format="task_state", cameras=("base_0_rgb",))
    again = vm.ValueModelConfig.from_json(cfg.to_json())
    assert again == cfg
    with pytest.raises(errors.CheckpointError, match="unknown fields"):
        vm.ValueModelConfig.from_json('{"cameras": ["a"], "bogus": 1}')
    with_state = dataclasses.replace(TINY, state_dim=39)
    assert vm.ValueModelConfig.from_json(with_state.to_json()) == with_state
    # A checkpoint written before `state_dim` existed reads as "no state token".
    old = {k: v for k, v in dataclasses.asdict(TINY).items() if k != "state_dim"}
    assert vm.ValueModelConfig.from_json(json.dumps(old)).state_dim == 0
    with pytest.raises(errors.ConfigError, match="pick one"):
        dataclasses.replace(TINY, state_dim=3, prompt_format="task_state")
    with pytest.raises(errors.ConfigError, match="state_dim must be >= 0"):
        dataclasses.replace(TINY, state_dim=-1)
    with pytest.raises(errors.ConfigError, match="freeze_mode"):
        vm.ValueModelConfig(freeze_mode="everything")
    with pytest.raises(errors.ConfigError, match="SigLIP variant"):
        vm.ValueModelConfig(siglip_variant="huge/3x")
    with pytest.raises(errors.ConfigError, match="Gemma3 variant"):
        vm.ValueModelConfig(gemma3_variant="gemma3_9000b")
    assert siglip.num_tokens("mu/32", (64, 64)) == TINY.num_image_tokens == 4
    assert gemma3.get_config(TINY.gemma3_variant).width == 64


def test_prompt_tokenisation(gemma3_spm_model):
    tok = _tokenizer.Gemma3Tokenizer(gemma3_spm_model, max_len=64)
    state = np.array([-1.0, 0.0, 0.999, 2.0], np.float32)
    text = vm.format_value_prompt("task_state", " pick_up the vial\n", state)
    assert text == "Task: pick up the vial, State: 0 128 255 255;\n"
    assert vm.format_value_prompt("task", "fold_the towel") == "fold the towel"
    tokens, mask = vm.tokenize_value_prompt(tok, "task_state", "pick_up the vial", state)
    assert tokens.shape == (64,) and tokens[0] == tok.bos_id and mask.sum() > 5 and not mask[-1]
    assert tok.decode(tokens[1 : mask.sum()]).startswith("Task: pick up the vial, State: 0 128 255 255;")
    with pytest.raises(errors.ConfigError, match="needs the normalised state"):
        vm.format_value_prompt("task_state", "x", None)


@pytest.mark.parametrize("sigma_bins", [0.5, 0.75, 2.0])
def test_hl_gauss_target(sigma_bins):
    """A distribution per target (sums to 1) whose mean is the clipped target within one bin width; the bins next
    to the target carry the most mass, and a smaller sigma concentrates it."""
    centers = np.asarray(vm.bin_centers())
    targets = np.concatenate([np.random.default_rng(1).uniform(-1.2, 0.2, 200), [-1.0, 0.0, -0.5, -0.5025]])
    dist = np.asarray(vm.hl_gauss(targets, sigma_bins=sigma_bins))
    assert dist.shape == (len(targets), 201) and np.all(dist >= 0)
    np.testing.assert_allclose(dist.sum(-1), 1.0, atol=1e-5)
    clipped = np.clip(targets, -1, 0)
    # Within a bin width at the default sigma (the truncation at the two ends shifts the mean by < 0.7 sigma).
    assert np.abs(dist @ centers - clipped).max() < 0.005 * max(1.0, 0.7 * sigma_bins)
    inside = (targets > -0.95) & (targets < -0.05)
    np.testing.assert_allclose((dist @ centers)[inside], clipped[inside], atol=1e-4)  # unbiased away from the ends
    nearest = np.abs(centers[None] - clipped[:, None]).argmin(-1)
    assert np.all(dist.argmax(-1) == nearest)
    on_atom = np.asarray(vm.hl_gauss(np.array([-0.5]), sigma_bins=sigma_bins))[0]
    assert on_atom[100] < np.asarray(vm.hl_gauss(np.array([-0.5]), sigma_bins=0.25))[0, 100]
    assert on_atom[100] > on_atom[99] == pytest.approx(on_atom[101], rel=1e-4)
    with pytest.raises(errors.ConfigError, match="sigma"):
        vm.hl_gauss(targets, sigma_bins=0.0)


def test_value_loss_targets():
    """two_hot stays the default (the loss is unchanged), hl_gauss is the CE against `hl_gauss`; a bad name fails."""
    targets = jnp.array([-0.9, -0.25, 0.0])
    logits = jax.random.normal(jax.random.key(0), (3, 201))
    logp = jax.nn.log_softmax(logits, -1)
    np.testing.assert_allclose(vm.value_loss(logits, targets), -jnp.mean(jnp.sum(vm.two_hot(targets) * logp, -1)))
    np.testing.assert_allclose(vm.value_loss(logits, targets, kind="two_hot"), vm.value_loss(logits, targets))
    hl = vm.value_loss(logits, targets, kind="hl_gauss", sigma_bins=1.5, reduce=False)
    np.testing.assert_allclose(hl, -jnp.sum(vm.hl_gauss(targets, sigma_bins=1.5) * logp, -1), rtol=1e-6)
    # Logits of the target itself minimise the HL-Gauss loss and read back the target.
    perfect = jnp.log(vm.hl_gauss(targets) + 1e-12)
    np.testing.assert_allclose(vm.expected_value(perfect), targets, atol=0.005)
    with pytest.raises(errors.ConfigError, match="value target 'one_hot'"):
        vm.value_loss(logits, targets, kind="one_hot")
