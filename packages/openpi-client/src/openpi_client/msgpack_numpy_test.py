import msgpack
import numpy as np
import pytest

from openpi_client import msgpack_numpy


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.zeros((2, 224, 224, 3), dtype=np.uint8),
        np.array([True, False]),
        np.arange(6, dtype=">i4").reshape(2, 3),  # byte order survives
        np.arange(10, dtype=np.float64)[::2],  # non-contiguous input
        np.zeros((0, 7), dtype=np.int16),
        np.array(["positive", "none"]),
        np.array(1.5, dtype=np.float16),  # 0-d array stays an array
    ],
)
def test_round_trip_arrays(array):
    out = msgpack_numpy.unpackb(msgpack_numpy.packb({"x": array}))["x"]
    assert out.dtype == array.dtype
    assert out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_round_trip_nested_and_scalars():
    obj = {
        "a": {"b": [np.int64(3), np.float32(2.5), np.bool_(True)]},
        "prompt": "pick up the vial",
        "raw": b"\x00\x01",
        "n": 7,
    }
    out = msgpack_numpy.unpackb(msgpack_numpy.Packer().pack(obj))
    scalars = out["a"]["b"]
    assert [type(s) for s in scalars] == [np.int64, np.float32, np.bool_]
    assert scalars[1] == np.float32(2.5)
    assert out["prompt"] == "pick up the vial" and out["raw"] == b"\x00\x01" and out["n"] == 7


def test_exact_extension_map_bytes():
    """The encoding is the one openpi peers expect, checked with plain msgpack (no shared code)."""
    array = np.array([[1, 2, 3]], dtype=np.int16)
    packed = msgpack_numpy.packb(array)
    expected = msgpack.packb(
        {b"__ndarray__": True, b"data": array.tobytes(), b"dtype": "<i2", b"shape": [1, 3]}, use_bin_type=True
    )
    assert packed == expected
    scalar = msgpack_numpy.packb(np.float32(0.5))
    assert scalar == msgpack.packb({b"__npgeneric__": True, b"data": 0.5, b"dtype": "<f4"}, use_bin_type=True)
    # A map written by another implementation decodes to an array.
    foreign = msgpack.packb({"s": {b"__ndarray__": True, b"data": b"\x01\x00", b"dtype": "<u2", b"shape": [1]}})
    np.testing.assert_array_equal(msgpack_numpy.unpackb(foreign)["s"], np.array([1], dtype=np.uint16))


@pytest.mark.parametrize("value", [np.array([1 + 2j]), np.array([object()], dtype=object), np.zeros(2, "i4,f4")])
def test_refused_dtypes_on_pack(value):
    with pytest.raises(ValueError, match="dtype"):
        msgpack_numpy.packb({"x": value})


def _ext(**fields):
    base = {b"__ndarray__": True, b"data": b"\x00" * 8, b"dtype": "<f4", b"shape": [2]}
    base.update({k.encode(): v for k, v in fields.items()})
    return msgpack.packb({"x": base}, use_bin_type=True)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1garbage", "not valid msgpack"),
        (msgpack_numpy.packb({"x": np.zeros(4)})[:-5], "not valid msgpack"),
        (msgpack_numpy.packb({"a": 1}) + b"\x01", "more than one"),
        (_ext(dtype="<c8"), "refused"),
        (_ext(dtype="|O"), "refused"),
        (_ext(dtype="nonsense"), "unknown dtype"),
        (_ext(shape=[3]), "needs 12 bytes"),
        (_ext(shape=[-2]), "negative"),
        (_ext(shape="2"), "shape"),
        (_ext(data="text"), "bytes"),
    ],
)
def test_malformed_input_raises_decode_error(payload, message):
    with pytest.raises(msgpack_numpy.DecodeError, match=message):
        msgpack_numpy.unpackb(payload)


def test_size_limit():
    data = msgpack_numpy.packb({"x": np.zeros(100, np.uint8)})
    with pytest.raises(msgpack_numpy.DecodeError, match="exceeds the limit"):
        msgpack_numpy.unpackb(data, max_bytes=50)
    assert msgpack_numpy.unpackb(data, max_bytes=len(data))["x"].shape == (100,)


def test_unpacked_arrays_are_read_only_views():
    out = msgpack_numpy.unpackb(msgpack_numpy.packb(np.ones(3)))
    with pytest.raises(ValueError):
        out[0] = 2
