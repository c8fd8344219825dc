"""Image helpers for robot clients: shrink camera frames before sending them.

Resizing on the robot (to the model's 224x224) cuts each request from megabytes to ~150 kB per camera.
`resize_with_pad` keeps the aspect ratio and pads with black, like `tf.image.resize_with_pad` and
openpi's client. It is written in numpy only (no Pillow dependency on the robot) and reproduces Pillow's
antialiased bilinear filter bit for bit on uint8 images: separable triangle filter whose support
grows with the downscale factor, horizontal pass first, 22-bit fixed-point weights, rounding after each
pass. Matching Pillow matters because openpi clients resized with it when the training data was made.
"""

from __future__ import annotations

import numpy as np

__all__ = ["convert_to_uint8", "resize_with_pad"]

# Pillow's fixed-point precision for 8-bit images (32 bits - 8 bits of pixel - 2 bits of headroom).
_PRECISION_BITS = 22
# Ways callers name bilinear: Pillow's constant (Image.BILINEAR == Image.Resampling.BILINEAR == 2) or a string.
_BILINEAR = (2, "bilinear")


def convert_to_uint8(img: np.ndarray) -> np.ndarray:
    """Converts a float image in [0, 1] to uint8 (4x fewer bytes on the wire); uint8 passes through.

    Values are clipped first so out-of-range pixels saturate instead of wrapping around.
    """
    if np.issubdtype(img.dtype, np.floating):
        return (255 * np.clip(img, 0.0, 1.0)).astype(np.uint8)
    return img


def _bilinear_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output pixel: first source index, and the normalised weights over a fixed-width window.

    Returns (starts [out], weights [out, window], valid [out, window]).
    """
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = filter_scale  # the triangle filter has support 1, widened when shrinking (antialiasing)
    window = int(np.ceil(support)) * 2 + 1
    starts = np.empty(out_size, dtype=np.int64)
    weights = np.zeros((out_size, window), dtype=np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        x = np.arange(lo, hi, dtype=np.float64)
        w = np.clip(1.0 - np.abs((x - center + 0.5) / filter_scale), 0.0, None)
        total = w.sum()
        if total != 0.0:
            w = w / total
        starts[i] = lo
        weights[i, : hi - lo] = w
    return starts, weights, weights != 0.0


def _resample_axis(img: np.ndarray, out_size: int, axis: int, integer: bool) -> np.ndarray:
    """Resamples `img` ([N, H, W, C]) along `axis` (1 or 2) to `out_size`."""
    in_size = img.shape[axis]
    if in_size == out_size:
        return img
    starts, weights, _ = _bilinear_coefficients(in_size, out_size)
    window = weights.shape[1]
    # Source indices for each (output pixel, tap); taps past the edge carry weight 0, so clamp them.
    index = np.minimum(starts[:, None] + np.arange(window)[None, :], in_size - 1)
    taps = np.take(img, index, axis=axis)  # [..., out, window, ...]
    if integer:
        fixed = np.where(
            weights < 0,
            np.trunc(weights * (1 << _PRECISION_BITS) - 0.5),
            np.trunc(weights * (1 << _PRECISION_BITS) + 0.5),
        ).astype(np.int64)
        shape = [1] * taps.ndim
        shape[axis], shape[axis + 1] = out_size, window
        acc = (taps.astype(np.int64) * fixed.reshape(shape)).sum(axis=axis + 1) + (1 << (_PRECISION_BITS - 1))
        return np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)
    shape = [1] * taps.ndim
    shape[axis], shape[axis + 1] = out_size, window
    return (taps * weights.reshape(shape).astype(taps.dtype)).sum(axis=axis + 1).astype(img.dtype)


def _resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    integer = images.dtype == np.uint8
    if not integer and not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"resize_with_pad supports uint8 or float images, got dtype {images.dtype}.")
    out = _resample_axis(images, width, axis=2, integer=integer)  # horizontal pass first, as Pillow does
    return _resample_axis(out, height, axis=1, integer=integer)


def resize_with_pad(images: np.ndarray, height: int, width: int, method: object = None) -> np.ndarray:
    """Resizes images [..., h, w, c] to [..., height, width, c] without distortion, padding with zeros.

    The image is scaled by the largest factor that fits, then centred (extra pixel of an odd margin on
    the bottom/right). Images already of the target size are returned unchanged. `method` exists for
    drop-in compatibility with openpi's client; only bilinear (Pillow's default there) is implemented.
    """
    if method is not None and method not in _BILINEAR:
        raise ValueError(f"resize_with_pad implements only bilinear resizing, got method={method!r}.")
    if images.ndim < 3:
        raise ValueError(f"resize_with_pad expects images of shape [..., h, w, c], got shape {images.shape}.")
    if 0 in images.shape[-3:]:
        raise ValueError(
            f"resize_with_pad got an empty image of shape {images.shape}; pass images with height, width and "
            "channels > 0."
        )
    if images.shape[-3:-1] == (height, width):
        return images
    leading = images.shape[:-3]
    cur_h, cur_w, channels = images.shape[-3:]
    batch = images.reshape(-1, cur_h, cur_w, channels)

    ratio = max(cur_w / width, cur_h / height)
    new_h = int(cur_h / ratio)
    new_w = int(cur_w / ratio)
    resized = _resize(batch, new_h, new_w)

    out = np.zeros((batch.shape[0], height, width, channels), dtype=images.dtype)
    top = max(0, int((height - new_h) / 2))
    left = max(0, int((width - new_w) / 2))
    out[:, top : top + new_h, left : left + new_w] = resized
    return out.reshape(*leading, height, width, channels)
