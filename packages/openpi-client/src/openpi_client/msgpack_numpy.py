"""msgpack with numpy arrays, byte-compatible with openpi's policy servers and clients.

openpi robot clients and servers exchange plain msgpack maps in which every numpy value is replaced by a
small extension map:

- an ndarray becomes ``{b"__ndarray__": True, b"data": <raw bytes>, b"dtype": dtype.str, b"shape": shape}``
  (data in C order, dtype.str keeps the byte order, e.g. ``"<f4"``, ``"|u1"``);
- a numpy scalar becomes ``{b"__npgeneric__": True, b"data": <python item>, b"dtype": dtype.str}``.

Object, void (structured) and complex dtypes are refused both ways: they cannot be rebuilt safely from
bytes sent by a stranger. msgpack itself cannot run code on unpack (unlike pickle), which is why the
protocol uses it.

Unpacking input from the network is defensive: a malformed extension map raises `DecodeError` (a
`ValueError`) with a one-sentence message instead of an arbitrary numpy exception, so a server can
forward the message to the client.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

__all__ = ["DecodeError", "Packer", "pack_array", "packb", "unpack_array", "unpackb"]

# dtype kinds that cannot travel: object (arbitrary Python objects), void (structured records), complex.
_REFUSED_KINDS = ("O", "V", "c")


class DecodeError(ValueError):
    """The bytes are not a valid msgpack-numpy message."""


def pack_array(obj: Any) -> Any:
    """msgpack `default` hook: turns numpy arrays and scalars into openpi's extension maps."""
    if isinstance(obj, np.ndarray | np.generic) and obj.dtype.kind in _REFUSED_KINDS:
        raise ValueError(
            f"Cannot send a numpy value of dtype {obj.dtype}: object, structured and complex dtypes are not "
            "supported by the openpi wire format; convert it to a plain numeric or string array first."
        )
    if isinstance(obj, np.ndarray):
        return {
            b"__ndarray__": True,
            b"data": obj.tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": obj.shape,
        }
    if isinstance(obj, np.generic):
        return {
            b"__npgeneric__": True,
            b"data": obj.item(),
            b"dtype": obj.dtype.str,
        }
    # msgpack calls `default` only for types it cannot pack; anything else is a caller error.
    raise TypeError(f"Cannot pack an object of type {type(obj).__name__}; send dicts, lists, numbers, str, bytes.")


def _parse_dtype(raw: Any) -> np.dtype:
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    if not isinstance(raw, str):
        raise DecodeError(f"numpy extension map has a dtype of type {type(raw).__name__}; expected a dtype string.")
    try:
        dtype = np.dtype(raw)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"numpy extension map names an unknown dtype {raw!r}.") from exc
    if dtype.kind in _REFUSED_KINDS:
        raise DecodeError(f"numpy extension map has dtype {raw!r}; object, structured and complex dtypes are refused.")
    return dtype


def _parse_shape(raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list | tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in raw):
        raise DecodeError(f"numpy extension map has shape {raw!r}; expected a list of non-negative integers.")
    if any(d < 0 for d in raw):
        raise DecodeError(f"numpy extension map has a negative dimension in shape {list(raw)}.")
    return tuple(raw)


def unpack_array(obj: dict) -> Any:
    """msgpack `object_hook`: rebuilds arrays and scalars from openpi's extension maps.

    Arrays are zero-copy views of the received bytes and therefore read-only; copy before writing.
    """
    if b"__ndarray__" in obj:
        missing = [k.decode() for k in (b"data", b"dtype", b"shape") if k not in obj]
        if missing:
            raise DecodeError(f"numpy array extension map lacks the field(s) {missing}.")
        dtype = _parse_dtype(obj[b"dtype"])
        shape = _parse_shape(obj[b"shape"])
        data = obj[b"data"]
        if not isinstance(data, bytes):
            raise DecodeError(f"numpy array extension map carries data of type {type(data).__name__}; expected bytes.")
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise DecodeError(
                f"numpy array of shape {list(shape)} and dtype {dtype.str} needs {expected} bytes of data but the "
                f"message carries {len(data)}; the sender's array and its header disagree."
            )
        return np.ndarray(shape=shape, dtype=dtype, buffer=data)
    if b"__npgeneric__" in obj:
        if b"data" not in obj or b"dtype" not in obj:
            raise DecodeError("numpy scalar extension map lacks its data or dtype field.")
        dtype = _parse_dtype(obj[b"dtype"])
        try:
            return dtype.type(obj[b"data"])
        except (TypeError, ValueError, OverflowError) as exc:
            raise DecodeError(f"numpy scalar {obj[b'data']!r} cannot be read as dtype {dtype.str}.") from exc
    return obj


def Packer() -> msgpack.Packer:
    """A reusable msgpack packer that understands numpy (binary type on, as openpi's peers expect)."""
    return msgpack.Packer(default=pack_array, use_bin_type=True)


def packb(obj: Any) -> bytes:
    """Packs `obj` (dicts, lists, scalars, str, bytes, numpy arrays and scalars) into msgpack bytes."""
    return msgpack.packb(obj, default=pack_array, use_bin_type=True)


def unpackb(data: bytes, *, max_bytes: int | None = None) -> Any:
    """Unpacks msgpack bytes produced by `packb` or by openpi's own client/server.

    Raises `DecodeError` (a `ValueError`) for anything that is not a single complete msgpack message.
    `max_bytes` refuses larger inputs before parsing them.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected msgpack bytes, got {type(data).__name__}.")
    if max_bytes is not None and len(data) > max_bytes:
        raise DecodeError(f"message of {len(data)} bytes exceeds the limit of {max_bytes} bytes.")
    try:
        return msgpack.unpackb(data, object_hook=unpack_array, raw=False)
    except DecodeError:
        raise
    except msgpack.ExtraData as exc:
        raise DecodeError("bytes hold more than one msgpack message; send exactly one packed dict per frame.") from exc
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        # Covers truncated input ("Unpack failed: incomplete input"), invalid start bytes and bad UTF-8.
        raise DecodeError(f"bytes are not valid msgpack ({exc}).") from exc
