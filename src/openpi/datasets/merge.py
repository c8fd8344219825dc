"""Merging LeRobot datasets with the same features into one new dataset.

Episodes are renumbered in order (all of the first dataset, then the second, ...), tasks are unified by
their text, and `index` / `episode_index` / `task_index` are rewritten. Videos are never re-encoded:
v3.0 video files (and v2.1 per-episode files) are hard-linked or copied into the new layout with the
episodes' time ranges unchanged. Data files are rewritten row group by row group, so image bytes and the
other columns pass through untouched. Per-episode stats are carried over and re-aggregated.

Output version: v3.0 by default (it can hold v2.1 and v3.0 inputs: a v2.1 episode video becomes its own
v3.0 file); v2.1 output needs v2.1 inputs when there are videos, since splitting a v3.0 video file would
need re-encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
import copy
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
from openpi.datasets import rewrite
from openpi.datasets import writer
from openpi.recap import provenance
from openpi.shared import atomic
from openpi.shared import errors

# The encoder that writes each codec LeRobot records in info.json (`video.codec`).
_ENCODERS = {"av1": "libsvtav1", "h264": "libx264", "hevc": "libx265"}
_CONVERT_HINT = (
    "pass convert_cameras='image' (--convert-cameras image: decode every video to image mode) or 'video' (encode "
    "images, and re-encode other codecs, to the first video dataset's codec)"
)


def _codec(feature: dict[str, Any]) -> str | None:
    return (feature.get("info") or {}).get("video.codec")


def check_compatible(datasets: Sequence[reader.LeRobotDataset], *, cameras: bool = True) -> None:
    """Refuses datasets whose fps, robot type or features (names, dtypes, shapes, video codecs) differ, naming the
    first difference with the datasets in the order given. `cameras=False` skips the camera storage and codec
    checks (for a merge that converts the cameras first)."""
    first = datasets[0]
    for other in datasets[1:]:
        where = f"{first.root} and {other.root}"
        if other.fps != first.fps:
            raise errors.DatasetError(f"Cannot merge {where}: fps {first.fps} != {other.fps}; resample one of them.")
        if other.robot_type != first.robot_type:
            raise errors.DatasetError(
                f"Cannot merge {where}: robot_type {first.robot_type!r} != {other.robot_type!r}; merge data of one "
                "robot only."
            )
        for name in dict.fromkeys([*first.features, *other.features]):
            a, b = first.features.get(name), other.features.get(name)
            if a is None or b is None:
                missing_in = first.root if a is None else other.root
                raise errors.DatasetError(
                    f"Cannot merge {where}: feature {name!r} is missing from {missing_in}; add it there "
                    "(copy_with_columns) or drop it from the others."
                )
            storage = {a["dtype"], b["dtype"]} == set(info_lib.CAMERA_DTYPES)
            if storage and not cameras:
                continue
            if a["dtype"] != b["dtype"] or list(a["shape"]) != list(b["shape"]):
                hint = _CONVERT_HINT if storage else "convert one so they match"
                raise errors.DatasetError(
                    f"Cannot merge {where}: feature {name!r} is {a['dtype']} {list(a['shape'])} in {first.root} but "
                    f"{b['dtype']} {list(b['shape'])} in {other.root}; {hint}."
                )
            if cameras and a["dtype"] == "video" and None not in (_codec(a), _codec(b)) and _codec(a) != _codec(b):
                # info.json holds one codec per camera: merging would record the first one for every file.
                raise errors.DatasetError(
                    f"Cannot merge {where}: camera {name!r} is encoded as {_codec(b)} in {other.root} but as "
                    f"{_codec(a)} in {first.root}, and info.json records one codec per camera; {_CONVERT_HINT}."
                )


def merge_datasets(
    sources: Sequence[str | os.PathLike | reader.LeRobotDataset],
    dst: str | os.PathLike,
    *,
    version: str = info_lib.V30,
    overwrite: bool = False,
    link_videos: bool = True,
    rescale_labels: bool = False,
    allow_unrecorded_label_scale: bool = False,
    convert_cameras: str | None = None,
) -> reader.LeRobotDataset:
    """Merges `sources` into a new dataset at `dst` (atomic: staged in a hidden sibling, then renamed).

    Datasets with RECAP value labels must be on one label scale (their meta/recap.json, see
    `openpi.recap.provenance`), or the merge is refused; `rescale_labels` instead recomputes `reward_label` and
    `value_label` of the merged dataset on one scale (per task, the longest normaliser). Labels whose scale a
    source does not record are refused too, unless `allow_unrecorded_label_scale` (merged as they are, the scale
    recorded as unknown). Without `rescale_labels` every source's `value_label` is recomputed from the scale it
    records and a mismatch (an edited recap.json, edited labels, a paper scale without normaliser) is refused.
    The merged dataset's meta/recap.json records the scale and every source (root, content
    fingerprint, its own provenance).

    Cameras must be stored alike (all video with one codec per camera, or all image); `convert_cameras="image"`
    decodes every video source to image mode first, `"video"` encodes image sources and re-encodes other codecs
    to the first video source's codec (lossy, like any encode).
    """
    if not sources:
        raise errors.ConfigError("merge_datasets needs at least one source dataset.")
    if version not in info_lib.SUPPORTED_VERSIONS:
        raise errors.ConfigError(f"version must be one of {info_lib.SUPPORTED_VERSIONS}, got {version!r}.")
    if convert_cameras not in (None, "video", "image"):
        raise errors.ConfigError(f"convert_cameras must be None, 'video' or 'image', got {convert_cameras!r}.")
    dst_root = atomic.check_output_dir(dst)  # before the sources are read
    datasets = [s if isinstance(s, reader.LeRobotDataset) else reader.LeRobotDataset.open(s) for s in sources]
    check_compatible(datasets, cameras=convert_cameras is None)
    for ds in datasets:
        if dst_root.resolve() == ds.root.resolve() or ds.root.resolve() in dst_root.resolve().parents:
            raise errors.DatasetError(f"The merge destination {dst_root} must not be (inside) a source, {ds.root}.")
    if dst_root.exists() and not overwrite:
        raise errors.DatasetError(f"{dst_root} already exists; pass overwrite=True or choose another directory.")
    if version == info_lib.V21:
        for ds in datasets:
            if ds.video_keys and not info_lib.has_episode_files(ds.version):
                raise errors.DatasetError(
                    f"{ds.root} is a v3.0 dataset with videos; it can only be merged into v3.0 (splitting its video "
                    "files would need re-encoding), so pass version='v3.0'."
                )

    scale = provenance.merged_label_scale(
        datasets, rescale=rescale_labels, allow_unrecorded=allow_unrecorded_label_scale
    )
    originals = datasets
    staging = writer._staging_dir(dst_root)
    staging.mkdir(parents=True)
    try:
        if convert_cameras is not None:
            datasets = _convert_cameras(datasets, staging.parent / f"{staging.name}-cameras", convert_cameras)
            check_compatible(datasets)
        features = copy.deepcopy(datasets[0].features)
        schema = parquet_schema.schema(features, version)
        state = _MergeState(staging, version, features, schema, link_videos)
        for ds in datasets:
            state.add(ds)
        info = writer.make_info(
            version=version,
            robot_type=datasets[0].robot_type,
            fps=datasets[0].fps,
            features=features,
            num_episodes=len(state.records),
            num_frames=state.num_frames,
            num_tasks=len(state.tasks),
        )
        tasks = {index: task for task, index in state.tasks.items()}
        writer.write_meta(staging, info, tasks, state.records)
        sources_meta = [
            {
                "root": str(ds.root),
                "fingerprint": provenance.dataset_fingerprint(ds.root),
                **{k: v for k, v in (provenance.read(ds.root) or {}).items() if k != "version"},
            }
            for ds in originals
        ]
        provenance.write(
            staging,
            {
                "label_scale": None if scale is None else scale.to_json(),
                "labels_rescaled": bool(rescale_labels and scale is not None),
                "sources": sources_meta,
            },
        )
        writer.publish_dir(staging, dst_root, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging.parent / f"{staging.name}-cameras", ignore_errors=True)
    merged = reader.LeRobotDataset.open(dst_root)
    if rescale_labels and scale is not None:
        merged = rewrite.copy_with_columns(merged, None, provenance.rescaled_columns(merged, scale), in_place=True)
    return merged


def _convert_cameras(
    datasets: Sequence[reader.LeRobotDataset], workdir: pathlib.Path, target: str
) -> list[reader.LeRobotDataset]:
    """`datasets` with every camera stored as `target` ("video": the first video source's codec; "image"); sources
    already stored that way are used as they are, the others rewritten frame by frame under `workdir`."""
    from openpi.datasets import video as video_lib

    codec = None
    if target == "video":
        codec = next((_codec(ds.features[k]) for ds in datasets for k in ds.video_keys), None) or "av1"
        if codec not in _ENCODERS:
            raise errors.DatasetError(
                f"Cannot re-encode to {codec!r} (this writer encodes {sorted(_ENCODERS)}); pass convert_cameras='image'."
            )
    out = []
    for n, ds in enumerate(datasets):
        if target == "image":
            ready = not ds.video_keys
        else:
            ready = not ds.image_keys and all(_codec(ds.features[k]) in (None, codec) for k in ds.video_keys)
        if ready:
            out.append(ds)
            continue
        encoding = video_lib.VideoEncoding(codec=_ENCODERS[codec]) if codec else video_lib.VideoEncoding()
        out.append(_rewrite_cameras(ds, workdir / str(n), use_videos=target == "video", encoding=encoding))
    return out


def _rewrite_cameras(
    ds: reader.LeRobotDataset, dst: pathlib.Path, *, use_videos: bool, encoding
) -> reader.LeRobotDataset:
    """A copy of `ds` with its cameras decoded and written as video (`encoding`) or image; other columns as they are."""
    features = {k: v for k, v in ds.features.items() if k not in info_lib.DEFAULT_FEATURES}
    version = ds.version if ds.version in (info_lib.V21, info_lib.V30) else info_lib.V21
    task_index = ds.column("task_index")
    with writer.LeRobotDatasetWriter.create(
        dst, fps=ds.fps, features=features, robot_type=ds.robot_type, version=version, use_videos=use_videos,
        video_encoding=encoding,
    ) as sink:  # fmt: skip
        for ep in ds.episodes:
            frames: dict[str, Any] = {}
            for key in features:
                if key in ds.camera_keys:
                    frames[key] = np.stack([ds.get(i, keys=[key])[key] for i in range(ep.from_index, ep.to_index)])
                else:
                    frames[key] = ds.column(key)[ep.from_index : ep.to_index]
            sink.add_episode(frames, [ds.tasks[int(t)] for t in task_index[ep.from_index : ep.to_index]])
        return sink.finalize()


class _MergeState:
    def __init__(self, staging, version, features, schema, link_videos):
        self.staging = staging
        self.version = version
        self.features = features
        self.schema = schema
        self.link_videos = link_videos
        self.tasks: dict[str, int] = {}
        self.records: list[dict[str, Any]] = []
        self.num_frames = 0
        self.data_file = 0
        self.video_file = dict.fromkeys(info_lib.camera_keys(features, "video"), 0)

    def _pos(self, n: int) -> tuple[int, int]:
        return divmod(n, info_lib.DEFAULT_CHUNKS_SIZE)

    def _place(self, src: pathlib.Path, dst: pathlib.Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if self.link_videos:
            rewrite._link_or_copy(src, dst)
        else:
            shutil.copyfile(src, dst)

    def add(self, ds: reader.LeRobotDataset) -> None:
        task_map = np.zeros(max(ds.tasks, default=-1) + 1, dtype=np.int64)
        for index, task in ds.tasks.items():
            task_map[index] = self.tasks.setdefault(task, len(self.tasks))
        episode_map = {ep.episode_index: len(self.records) + n for n, ep in enumerate(ds.episodes)}
        stats = _episode_stats(ds)
        records = {}
        for ep in ds.episodes:
            new_index = episode_map[ep.episode_index]
            records[ep.episode_index] = {
                "episode_index": new_index,
                "tasks": list(ep.tasks),
                "length": ep.length,
                "dataset_from_index": self.num_frames + ep.from_index,
                "dataset_to_index": self.num_frames + ep.to_index,
                "stats": stats.get(ep.episode_index, {}),
            }
        self._copy_data(ds, episode_map, task_map, records)
        self._copy_videos(ds, records, episode_map)
        self.records.extend(records[ep.episode_index] for ep in ds.episodes)
        self.num_frames += ds.num_frames

    def _remap(self, table: pa.Table, start: int, episode_map, task_map) -> pa.Table:
        episodes = table.column("episode_index").to_numpy()
        columns = {}
        for field in self.schema:
            if field.name == "episode_index":
                columns[field.name] = pa.array([episode_map[int(e)] for e in episodes], pa.int64())
            elif field.name == "index":
                columns[field.name] = pa.array(np.arange(start, start + table.num_rows, dtype=np.int64))
            elif field.name == "task_index":
                columns[field.name] = pa.array(task_map[table.column("task_index").to_numpy()])
            else:
                columns[field.name] = table.column(field.name).cast(field.type)
        return pa.Table.from_pydict(columns, schema=self.schema)

    def _copy_data(self, ds, episode_map, task_map, records) -> None:
        old_of_new = {new: old for old, new in episode_map.items()}
        for rel, start in ds._data_files:
            source = reader._parquet_file(ds.root / rel)
            offset = self.num_frames + start
            if self.version == info_lib.V30:
                chunk, file = self._pos(self.data_file)
                self.data_file += 1
                path = self.staging / info_lib.V30_DATA_PATH.format(chunk_index=chunk, file_index=file)
                path.parent.mkdir(parents=True, exist_ok=True)
                with pq.ParquetWriter(path, self.schema, compression="snappy") as sink:
                    for group in range(source.metadata.num_row_groups):
                        table = self._remap(source.read_row_group(group), offset, episode_map, task_map)
                        sink.write_table(table)
                        for e in set(table.column("episode_index").to_pylist()):
                            record = records[old_of_new[e]]
                            record["data/chunk_index"], record["data/file_index"] = chunk, file
                        offset += table.num_rows
            else:
                table = self._remap(source.read(), offset, episode_map, task_map)
                new_episodes = table.column("episode_index").to_numpy()
                for e in np.unique(new_episodes):
                    rows = np.flatnonzero(new_episodes == e)
                    path = self.staging / info_lib.V21_DATA_PATH.format(
                        episode_chunk=int(e) // info_lib.DEFAULT_CHUNKS_SIZE, episode_index=int(e)
                    )
                    path.parent.mkdir(parents=True, exist_ok=True)
                    pq.write_table(table.slice(int(rows[0]), len(rows)), path, compression="snappy")

    def _copy_videos(self, ds, records, episode_map) -> None:
        placed: dict[str, tuple[int, int]] = {}  # source video path -> its new (chunk, file)
        for ep in ds.episodes:
            record = records[ep.episode_index]
            for key, segment in ep.videos.items():
                src = ds.root / segment.path
                if not src.is_file():
                    raise errors.DatasetError(f"Video file {src} is missing; restore it before merging.")
                if self.version == info_lib.V21:
                    new = episode_map[ep.episode_index]
                    dst = self.staging / info_lib.V21_VIDEO_PATH.format(
                        episode_chunk=new // info_lib.DEFAULT_CHUNKS_SIZE, video_key=key, episode_index=new
                    )
                    self._place(src, dst)
                    continue
                if segment.path not in placed:
                    placed[segment.path] = self._pos(self.video_file[key])
                    self.video_file[key] += 1
                    chunk, file = placed[segment.path]
                    dst = self.staging / info_lib.V30_VIDEO_PATH.format(
                        video_key=key, chunk_index=chunk, file_index=file
                    )
                    self._place(src, dst)
                chunk, file = placed[segment.path]
                record[f"videos/{key}/chunk_index"], record[f"videos/{key}/file_index"] = chunk, file
                record[f"videos/{key}/from_timestamp"] = segment.from_timestamp
                record[f"videos/{key}/to_timestamp"] = segment.to_timestamp


def _episode_stats(ds: reader.LeRobotDataset) -> dict[int, dict[str, dict[str, np.ndarray]]]:
    """Per-episode stats as stored by the source (v2.1 jsonl or v3.0 `stats/<feature>/<stat>` columns)."""
    out: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    if ds.version == info_lib.V20:  # no per-episode stats on disk: compute them for the parquet columns
        numeric = [
            k for k, f in ds.features.items() if f["dtype"] not in ("video", "image", "string") and ds.has_column(k)
        ]
        for ep in ds.episodes:
            out[ep.episode_index] = {
                k: episode_stats.feature_stats(ds.column(k)[ep.from_index : ep.to_index], with_quantiles=False)
                for k in numeric
            }
        return out
    if ds.version == info_lib.V21:
        path = ds.root / info_lib.V21_EPISODES_STATS_PATH
        if not path.is_file():
            return out
        for row in reader.read_jsonl(path):
            out[int(row["episode_index"])] = {
                k: {s: np.asarray(v) for s, v in d.items()} for k, d in row["stats"].items()
            }
        return out
    for path in sorted((ds.root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
        for row in reader.read_parquet(path).to_pylist():
            stats: dict[str, dict[str, np.ndarray]] = {}
            for key, value in row.items():
                if key.startswith("stats/") and value is not None:
                    feature, stat = key[len("stats/") :].rsplit("/", 1)
                    stats.setdefault(feature, {})[stat] = np.asarray(value)
            out[int(row["episode_index"])] = stats
    return out
