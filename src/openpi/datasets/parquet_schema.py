"""How LeRobot features map to parquet columns, and the `huggingface` schema metadata it writes.

LeRobot stores a shape-[1] feature as a plain scalar column, a 1-D feature as a fixed-size list, a
string as `string`, and an image (image mode) as the `datasets.Image` struct `{bytes, path}` holding PNG
bytes. The `huggingface` key of the parquet schema metadata repeats the feature types for the `datasets`
library; v3.0 spells fixed-size lists `List`, v2.1 `Sequence`. Writing it keeps our files loadable by
LeRobot itself.
"""

from __future__ import annotations

from collections.abc import Mapping
import io
import json
from typing import Any

import numpy as np
import PIL.Image
import pyarrow as pa

from openpi.datasets import info as info_lib
from openpi.shared import errors

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

_ARROW_SCALARS = {
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "float16": pa.float16(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
}


def arrow_type(name: str, feature: Mapping[str, Any]) -> pa.DataType:
    dtype = feature.get("dtype")
    if dtype == "image":
        return IMAGE_STRUCT
    if dtype not in _ARROW_SCALARS:
        raise errors.DatasetError(
            f"Feature {name!r} has dtype {dtype!r}, which cannot be stored in parquet; use one of "
            f"{', '.join([*_ARROW_SCALARS, 'image', 'video'])}."
        )
    shape = list(feature.get("shape", [1]))
    if shape == [1] or dtype == "string":
        return _ARROW_SCALARS[dtype]
    if len(shape) == 1:
        return pa.list_(_ARROW_SCALARS[dtype], shape[0])
    raise errors.DatasetError(
        f"Feature {name!r} has shape {shape}; only shape [1] and 1-D vectors are supported, flatten it to "
        f"[{int(np.prod(shape))}]."
    )


def hf_feature(feature: Mapping[str, Any], version: str) -> dict[str, Any]:
    dtype = feature["dtype"]
    if dtype == "image":
        return {"_type": "Image"}
    shape = list(feature.get("shape", [1]))
    if shape == [1] or dtype == "string":
        return {"dtype": dtype, "_type": "Value"}
    list_type = "List" if version == info_lib.V30 else "Sequence"
    return {"feature": {"dtype": dtype, "_type": "Value"}, "length": shape[0], "_type": list_type}


def stored_features(features: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The features that are parquet columns (everything except video)."""
    return {k: f for k, f in features.items() if f.get("dtype") != "video"}


def schema(features: Mapping[str, Mapping[str, Any]], version: str) -> pa.Schema:
    stored = stored_features(features)
    fields = [pa.field(name, arrow_type(name, f)) for name, f in stored.items()]
    hf = {"info": {"features": {name: hf_feature(f, version) for name, f in stored.items()}}}
    return pa.schema(fields, metadata={"huggingface": json.dumps(hf)})


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def to_arrow(name: str, feature: Mapping[str, Any], values: Any, frame_indices: np.ndarray | None = None) -> pa.Array:
    """One column of one episode (or file) as an Arrow array of the feature's parquet type."""
    kind = arrow_type(name, feature)
    if feature["dtype"] == "image":
        frames = np.asarray(values)
        indices = frame_indices if frame_indices is not None else np.arange(len(frames))
        cells = [
            {"bytes": encode_png(f), "path": f"frame-{int(i):06d}.png"} for f, i in zip(frames, indices, strict=True)
        ]
        return pa.array(cells, type=kind)
    if feature["dtype"] == "string":
        return pa.array([str(v) for v in np.asarray(values).reshape(-1)], type=kind)
    array = np.asarray(values)
    if pa.types.is_fixed_size_list(kind):
        flat = pa.array(np.ascontiguousarray(array.reshape(-1)), type=kind.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, kind.list_size)
    return pa.array(np.ascontiguousarray(array.reshape(-1)), type=kind)
