import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openpi.models import model as _model


def _raw(batch=2, size=(224, 224), dtype=np.uint8):
    rng = np.random.default_rng(0)
    if dtype == np.uint8:
        images = {k: rng.integers(0, 256, size=(batch, *size, 3), dtype=np.uint8) for k in _model.IMAGE_KEYS}
    else:
        images = {k: rng.uniform(-1, 1, size=(batch, *size, 3)).astype(np.float32) for k in _model.IMAGE_KEYS}
    return {
        "image": images,
        "image_mask": {k: np.ones((batch,), bool) for k in _model.IMAGE_KEYS},
        "state": rng.normal(size=(batch, 32)).astype(np.float32),
        "tokenized_prompt": np.ones((batch, 10), np.int32),
        "tokenized_prompt_mask": np.ones((batch, 10), bool),
    }


def test_from_dict_converts_uint8_and_round_trips():
    data = _raw()
    obs = _model.Observation.from_dict(data)
    img = obs.images["base_0_rgb"]
    assert img.dtype == np.float32 and img.min() >= -1.0 and img.max() <= 1.0
    np.testing.assert_allclose(img, data["image"]["base_0_rgb"] / 255.0 * 2 - 1, atol=1e-6)
    back = obs.to_dict()
    assert set(back) == {"image", "image_mask", "state", "tokenized_prompt", "tokenized_prompt_mask"}
    np.testing.assert_array_equal(back["state"], data["state"])
    assert obs.batch_size == 2


def test_observation_is_a_pytree():
    obs = _model.Observation.from_dict(_raw(dtype=np.float32))
    doubled = jax.jit(lambda o: jax.tree.map(lambda x: x * 2, o))(obs)
    np.testing.assert_allclose(doubled.state, obs.state * 2, rtol=1e-6)


def test_from_dict_errors_are_clear():
    data = _raw()
    del data["tokenized_prompt_mask"]
    with pytest.raises(_model.ObservationError, match="tokenized_prompt_mask"):
        _model.Observation.from_dict(data)
    data = _raw()
    del data["state"]
    with pytest.raises(_model.ObservationError, match="'state'"):
        _model.Observation.from_dict(data)


def test_check_observation_names_camera_and_expected_shape():
    data = _raw(dtype=np.float32)
    data["image"]["left_wrist_0_rgb"] = np.zeros((2, 3, 224, 224), np.float32)  # channels first
    obs = _model.Observation.from_dict(data)
    with pytest.raises(_model.ObservationError, match=r"left_wrist_0_rgb.*\[2, height, width, 3\]"):
        _model.check_observation(obs)
    ok = _model.Observation.from_dict(_raw(dtype=np.float32))
    _model.check_observation(ok, state_dim=32, max_token_len=10)
    with pytest.raises(_model.ObservationError, match="max_token_len 8"):
        _model.check_observation(ok, max_token_len=8)
    with pytest.raises(_model.ObservationError, match=r"\[2, 14\]"):
        _model.check_observation(ok, state_dim=14)


def test_resize_with_pad_keeps_aspect_and_pads_black():
    images = jnp.ones((1, 100, 200, 3), jnp.float32) * 0.5
    out = _model.resize_with_pad(images, 224, 224)
    assert out.shape == (1, 224, 224, 3)
    # 200 wide -> 224 wide, 100 high -> 112 high, 56 rows of -1 above and below.
    np.testing.assert_allclose(out[0, :56], -1.0)
    np.testing.assert_allclose(out[0, -56:], -1.0)
    np.testing.assert_allclose(out[0, 56:168], 0.5, atol=1e-6)


def test_preprocess_resizes_defaults_masks_and_augments():
    data = _raw(size=(120, 160))
    del data["image_mask"]["right_wrist_0_rgb"]
    obs = _model.Observation.from_dict(data)
    plain = _model.preprocess_observation(None, obs, train=False)
    assert plain.images["base_0_rgb"].shape == (2, 224, 224, 3)
    assert plain.image_masks["right_wrist_0_rgb"].dtype == jnp.bool_ and bool(
        plain.image_masks["right_wrist_0_rgb"].all()
    )

    augment = jax.jit(lambda r, o: _model.preprocess_observation(r, o, train=True))
    a = augment(jax.random.key(0), obs)
    b = augment(jax.random.key(1), obs)
    for key in _model.IMAGE_KEYS:
        img = np.asarray(a.images[key])
        assert img.shape == (2, 224, 224, 3) and img.min() >= -1.0 and img.max() <= 1.0
        assert not np.allclose(img, plain.images[key], atol=1e-3)
        assert not np.allclose(img, b.images[key], atol=1e-3)
    # Samples in a batch get different augmentations.
    assert not np.allclose(
        a.images["base_0_rgb"][0] - plain.images["base_0_rgb"][0],
        a.images["base_0_rgb"][1] - plain.images["base_0_rgb"][1],
    )


def test_preprocess_missing_camera_is_a_user_error():
    data = _raw()
    del data["image"]["base_0_rgb"]
    obs = _model.Observation.from_dict(data)
    with pytest.raises(_model.ObservationError, match="base_0_rgb"):
        _model.preprocess_observation(None, obs)


def _jitter_samples(n=256, color=(0.8, 0.3, 0.2), **kwargs):
    """n wrist images (no geometric warp) of one constant colour after the train-time augmentation, in [0, 1]."""
    image = np.broadcast_to(np.asarray(color, np.float32) * 2 - 1, (n, 4, 4, 3)).copy()
    obs = _model.Observation(
        images={"left_wrist_0_rgb": jnp.asarray(image)},
        image_masks={"left_wrist_0_rgb": jnp.ones((n,), bool)},
        state=jnp.zeros((n, 2)),
    )
    out = _model.preprocess_observation(
        jax.random.key(0), obs, train=True, image_keys=("left_wrist_0_rgb",), image_resolution=(4, 4), **kwargs
    )
    return np.asarray(out.images["left_wrist_0_rgb"][:, 0, 0]) / 2 + 0.5  # one pixel per sample: [n, 3]


def test_colour_jitter_matches_openpi_by_default():
    """Issue 14.12: openpi's jitter (augmax) applies half the time and shifts the hue by up to +-0.1 turn."""
    rgb = _jitter_samples()
    unchanged = np.all(np.abs(rgb - [0.8, 0.3, 0.2]) < 1e-5, axis=-1)
    assert 0.4 < unchanged.mean() < 0.6
    hsv = np.stack([np.array(colorsys.rgb_to_hsv(*p)) for p in rgb[~unchanged]])
    hue_shift = (hsv[:, 0] - colorsys.rgb_to_hsv(0.8, 0.3, 0.2)[0] + 0.5) % 1 - 0.5
    assert np.abs(hue_shift).max() <= 0.1 + 1e-4 and np.abs(hue_shift).max() > 0.08  # up to +-0.1, used
    assert np.all(rgb >= 0) and np.all(rgb <= 1)
    # The previous behaviour stays available by name: always applied, RGB factors, no hue change.
    legacy = _jitter_samples(color_jitter=_model.RGB_ALWAYS_COLOR_JITTER)
    assert not np.any(np.all(np.abs(legacy - [0.8, 0.3, 0.2]) < 1e-5, axis=-1))
