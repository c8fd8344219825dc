import numpy as np
import pytest

from openpi_client import image_tools


def test_convert_to_uint8_clips_and_scales():
    img = np.array([[-0.5, 0.0, 0.5, 1.0, 2.0]], dtype=np.float32)
    np.testing.assert_array_equal(image_tools.convert_to_uint8(img), [[0, 0, 127, 255, 255]])
    u8 = np.arange(5, dtype=np.uint8)
    assert image_tools.convert_to_uint8(u8) is u8


@pytest.mark.parametrize(("h", "w"), [(480, 640), (100, 37), (7, 5), (50, 50), (224, 224)])
def test_resize_with_pad_matches_pillow_bit_for_bit(h, w):
    image_module = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(h * 1000 + w)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = image_tools.resize_with_pad(img, 224, 224)

    ratio = max(w / 224, h / 224)
    rh, rw = int(h / ratio), int(w / ratio)
    resized = image_module.fromarray(img).resize((rw, rh), resample=image_module.BILINEAR)
    canvas = image_module.new(resized.mode, (224, 224), 0)
    canvas.paste(resized, (int((224 - rw) / 2), int((224 - rh) / 2)))
    np.testing.assert_array_equal(out, np.asarray(canvas))


def test_resize_with_pad_batch_shapes_and_padding():
    imgs = np.full((2, 3, 40, 80, 3), 200, dtype=np.uint8)
    out = image_tools.resize_with_pad(imgs, 32, 32)
    assert out.shape == (2, 3, 32, 32, 3)
    # 40x80 -> 16x32 centred: 8 rows of black padding above and below.
    assert (out[..., :8, :, :] == 0).all() and (out[..., 24:, :, :] == 0).all()
    assert (out[..., 8:24, :, :] == 200).all()


def test_resize_with_pad_float_keeps_dtype_and_range():
    img = np.ones((30, 60, 3), dtype=np.float32) * 0.25
    out = image_tools.resize_with_pad(img, 20, 20)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[5:15], 0.25, rtol=1e-6)


def test_resize_with_pad_accepts_openpi_method_argument():
    image_module = pytest.importorskip("PIL.Image")
    img = np.zeros((10, 20, 3), np.uint8)
    assert image_tools.resize_with_pad(img, 8, 8, method=image_module.BILINEAR).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="only bilinear"):
        image_tools.resize_with_pad(img, 8, 8, method=image_module.NEAREST)


def test_resize_with_pad_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        image_tools.resize_with_pad(np.zeros((4, 4)), 2, 2)
    with pytest.raises(ValueError, match="dtype"):
        image_tools.resize_with_pad(np.zeros((4, 4, 3), dtype=np.int32), 2, 2)


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 10, 3), (10, 0, 3)])
def test_resize_with_pad_refuses_empty_images(shape):
    """A zero-size image used to raise ZeroDivisionError (or produce garbage) instead of saying what is wrong."""
    with pytest.raises(ValueError, match="empty"):
        image_tools.resize_with_pad(np.zeros(shape, np.uint8), 224, 224)
