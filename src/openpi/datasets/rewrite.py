"""A copy of a LeRobot dataset with some per-frame columns replaced or added (relabelling, merging).

The community relabeller rewrote parquet files in place, one file per episode; on v3.0 (many episodes
per file) that is wrong, and on a v2.1 tree of symlinks it overwrote the source dataset. Here:

- the copy goes to a new directory, written under a hidden sibling and renamed into place at the end;
- data files are rewritten row group by row group (LeRobot's one-group-per-episode layout survives) with
  every other column, the image bytes and the parquet schema metadata kept as they were;
- video files are hard-linked (copied when linking fails, e.g. across file systems), never symlinked,
  so the copy never writes through to the source;
- per-episode and dataset stats and info.json are updated for the changed columns only;
- `in_place=True` instead replaces each changed file by a fully written temporary sibling (fsync +
  rename), which also turns a symlinked file into a real one instead of writing into its target.
"""

from __future__ import annotations

from collections.abc import Mapping
import copy
import json
import os
import pathlib
import shutil
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from openpi.datasets import episode_stats
from openpi.datasets import info as info_lib
from openpi.datasets import parquet_schema
from openpi.datasets import reader
from openpi.datasets import writer
from openpi.shared import atomic
from openpi.shared import errors

# Bookkeeping columns that tie frames to episodes and videos; replacing them would corrupt the dataset.
_PROTECTED = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def infer_feature(values: np.ndarray) -> dict[str, Any]:
    """A LeRobot feature spec for per-frame values [N] or [N, D] (strings -> "string", ints -> int64)."""
    array = np.asarray(values)
    if array.dtype.kind in "OUS":
        return {"dtype": "string", "shape": [1], "names": None}
    if array.dtype == np.bool_:
        dtype = "bool"
    elif np.issubdtype(array.dtype, np.integer):
        dtype = "int64"
    elif array.dtype == np.float64:
        dtype = "float64"
    else:
        dtype = "float32"
    shape = [1] if array.ndim == 1 else list(array.shape[1:])
    return {"dtype": dtype, "shape": shape, "names": None}


def copy_with_columns(
    src: str | os.PathLike | reader.LeRobotDataset,
    dst: str | os.PathLike | None,
    columns: Mapping[str, Any],
    features_update: Mapping[str, Mapping[str, Any]] | None = None,
    link_videos: bool = True,
    *,
    in_place: bool = False,
    overwrite: bool = False,
) -> reader.LeRobotDataset:
    """Writes `src` with `columns` (name -> per-frame values over all frames) replaced or added.

    `features_update` gives the spec of new columns (or changes an existing one); without it a new
    column's spec is inferred from its values. Returns the new dataset, opened.
    """
    ds = src if isinstance(src, reader.LeRobotDataset) else reader.LeRobotDataset.open(src)
    src_root = ds.root.resolve()
    if in_place:
        if dst is not None and pathlib.Path(dst).expanduser().resolve() != src_root:
            raise errors.DatasetError(f"in_place=True rewrites {src_root} itself; pass dst=None or dst=src.")
        dst_root = src_root
    else:
        if dst is None:
            raise errors.DatasetError("copy_with_columns needs a destination directory (or in_place=True).")
        dst_root = atomic.check_output_dir(dst)
        resolved = dst_root.resolve()
        if resolved == src_root or src_root in resolved.parents or resolved in src_root.parents:
            raise errors.DatasetError(
                f"Destination {dst_root} is the source dataset {src_root} or nested with it; choose a separate "
                "directory, or pass in_place=True to rewrite the source deliberately."
            )
        if dst_root.exists() and not overwrite:
            raise errors.DatasetError(f"{dst_root} already exists; pass overwrite=True or choose another directory.")

    features = copy.deepcopy(ds.features)
    new_values: dict[str, np.ndarray] = {}
    updates = dict(features_update or {})
    for name, raw in columns.items():
        if name in _PROTECTED:
            raise errors.DatasetError(
                f"Column {name!r} ties frames to episodes and videos and cannot be replaced; leave it out of columns."
            )
        if name in ds.camera_keys:
            raise errors.DatasetError(
                f"{name!r} is a camera feature; copy_with_columns replaces per-frame values, not images or videos."
            )
        spec = updates.pop(name, None) or features.get(name) or infer_feature(np.asarray(raw))
        spec = {**spec, "shape": [int(s) for s in spec["shape"]], "names": spec.get("names")}
        parquet_schema.arrow_type(name, spec)
        values = writer.coerce_feature(name, spec, raw, f"copy_with_columns of {ds.root}")
        if len(values) != ds.num_frames:
            raise errors.DatasetError(
                f"Column {name!r} has {len(values)} values but {ds.root} has {ds.num_frames} frames; pass one value "
                "per frame, in frame order."
            )
        new_values[name] = values
        features[name] = spec
    if updates:
        raise errors.DatasetError(
            f"features_update names {sorted(updates)}, which are not in columns; pass their values too."
        )
    features = _ordered(features, ds.features)
    info = copy.deepcopy(ds.info)
    info["features"] = features

    rewritten: dict[str, Any] = {}  # relative path -> bytes or a callable(path) writing the file
    for rel, start in ds._data_files:
        rewritten[rel] = _data_file_writer(ds.root / rel, start, new_values, features, ds.version)
    rewritten.update(_stats_files(ds, new_values, features))
    rewritten[info_lib.INFO_PATH] = (json.dumps(info, indent=4, ensure_ascii=False) + "\n").encode()

    if in_place:
        # Data first, info.json last: a reader never sees features the data does not have yet.
        for rel, content in rewritten.items():
            _write_replacing(src_root / rel, content)
        return reader.LeRobotDataset.open(src_root)

    staging = writer._staging_dir(dst_root)
    try:
        staging.mkdir(parents=True)
        for path in sorted(p for p in ds.root.rglob("*") if p.is_file()):
            rel = path.relative_to(ds.root).as_posix()
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel in rewritten:
                _write_replacing(target, rewritten[rel])
            elif rel.startswith("videos/") and link_videos:
                _link_or_copy(path, target)
            else:
                shutil.copyfile(path, target)
        writer.publish_dir(staging, dst_root, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return reader.LeRobotDataset.open(dst_root)


def _ordered(features: dict[str, Any], original: Mapping[str, Any]) -> dict[str, Any]:
    """Existing features keep their place; new ones go before LeRobot's bookkeeping columns."""
    head = [k for k in original if k not in info_lib.DEFAULT_FEATURES]
    new = [k for k in features if k not in original]
    tail = [k for k in original if k in info_lib.DEFAULT_FEATURES]
    return {k: features[k] for k in [*head, *new, *tail]}


def _link_or_copy(src: pathlib.Path, dst: pathlib.Path) -> None:
    try:
        os.link(os.path.realpath(src), dst)  # the real file, so a symlinked source never yields a symlink
    except OSError:
        shutil.copyfile(src, dst)


def _write_replacing(path: pathlib.Path, content: Any) -> None:
    if callable(content):
        tmp = path.parent / f".{path.name}.rewrite.tmp"
        try:
            content(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    else:
        info_lib.write_bytes_atomic(path, content)


def _data_file_writer(path, start, new_values, features, version):
    """A callable that writes `path` with the new columns, keeping its row groups and other columns."""

    def write(out: pathlib.Path) -> None:
        source = reader._parquet_file(path)
        old_schema = source.schema_arrow
        fields = list(old_schema)
        names = [f.name for f in fields]
        for name in new_values:
            field = pa.field(name, parquet_schema.arrow_type(name, features[name]))
            if name in names:
                fields[names.index(name)] = field
            else:
                position = names.index("timestamp") if "timestamp" in names else len(names)
                fields.insert(position, field)
                names.insert(position, name)
        metadata = dict(old_schema.metadata or {})
        hf = json.loads(metadata.get(b"huggingface", b"{}") or b"{}")
        hf_features = hf.setdefault("info", {}).setdefault("features", {})
        for name in new_values:
            hf_features[name] = parquet_schema.hf_feature(features[name], version)
        hf["info"]["features"] = {n: hf_features[n] for n in names if n in hf_features}
        metadata[b"huggingface"] = json.dumps(hf).encode()
        schema = pa.schema(fields, metadata=metadata)
        offset = start
        with pq.ParquetWriter(out, schema, compression="snappy") as sink:
            for group in range(source.metadata.num_row_groups):
                table = source.read_row_group(group)
                rows = table.num_rows
                arrays = []
                for name in names:
                    if name in new_values:
                        values = new_values[name][offset : offset + rows]
                        arrays.append(parquet_schema.to_arrow(name, features[name], values))
                    else:
                        arrays.append(table.column(name))
                sink.write_table(pa.Table.from_arrays(arrays, schema=schema))
                offset += rows

    return write


def _stats_files(ds: reader.LeRobotDataset, new_values, features) -> dict[str, Any]:
    """Updated per-episode stats (and stats.json) for the changed columns."""
    quantiles = ds.version == info_lib.V30
    per_episode: dict[int, dict[str, episode_stats.Stats | None]] = {}
    for episode in ds.episodes:
        per_episode[episode.episode_index] = {
            name: (
                None
                if features[name]["dtype"] == "string"
                else episode_stats.feature_stats(
                    values[episode.from_index : episode.to_index], with_quantiles=quantiles
                )
            )
            for name, values in new_values.items()
        }
    out: dict[str, Any] = {}
    if ds.version == info_lib.V21:
        path = ds.root / info_lib.V21_EPISODES_STATS_PATH
        lines = []
        for row in reader.read_jsonl(path):
            stats = row["stats"]
            for name, value in per_episode[int(row["episode_index"])].items():
                stats.pop(name, None)
                if value is not None:
                    stats[name] = episode_stats.to_json({name: value})[name]
            lines.append(json.dumps(row))
        out[info_lib.V21_EPISODES_STATS_PATH] = ("\n".join(lines) + "\n").encode()
        return out
    episode_files = sorted((ds.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    for path in episode_files if ds.version == info_lib.V30 else []:
        original = reader.read_parquet(path)
        rows = original.to_pylist()
        for row in rows:
            for name, value in per_episode[int(row["episode_index"])].items():
                for key in [k for k in row if k.startswith(f"stats/{name}/")]:
                    del row[key]
                for stat, array in (value or {}).items():
                    row[f"stats/{name}/{stat}"] = np.asarray(array).tolist()
        table = pa.Table.from_pylist(rows)
        # Unchanged columns keep their exact original types; only the recomputed stats are inferred.
        changed = tuple(f"stats/{name}/" for name in new_values)
        fields = [
            original.schema.field(n) if n in original.schema.names and not n.startswith(changed) else field
            for n, field in zip(table.column_names, table.schema, strict=True)
        ]
        table = table.cast(pa.schema(fields, metadata=original.schema.metadata))
        out[path.relative_to(ds.root).as_posix()] = lambda tmp, table=table: pq.write_table(table, tmp)
    stats_path = ds.root / info_lib.STATS_PATH
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    for name in new_values:
        stats.pop(name, None)
        parts = [{name: per_episode[e.episode_index][name]} for e in ds.episodes]
        if parts and parts[0][name] is not None:
            stats[name] = episode_stats.to_json(episode_stats.aggregate(parts))[name]
    out[info_lib.STATS_PATH] = (json.dumps(stats, indent=4) + "\n").encode()
    return out
