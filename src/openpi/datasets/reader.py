"""Reading LeRobot datasets (v2.1 and v3.0) without the `lerobot` package.

`LeRobotDataset.open(root)` reads the metadata and every non-camera parquet column once (small: a
million 14-dim frames is ~100 MB), so `column()` and `action_chunk()` never touch the disk again.
Camera features are fetched per frame: video through `video.VideoDecoder` (seek + forward decode, LRU of
open files per process), image mode from the PNG bytes in the parquet, read one row group at a time.

Frames are addressed by position 0..len-1 in episode order, which is what LeRobot's `dataset[i]` means.
Every check raises `DatasetError` naming the file / episode / frame and what to do.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterable
from collections.abc import Mapping
import dataclasses
import io
import json
import os
import pathlib
import threading
from typing import Any

import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq

from openpi.datasets import episode_stats
from openpi.datasets import info as info_lib
from openpi.datasets import video as video_lib
from openpi.shared import errors

# Encoded image bytes (image-mode datasets) kept in memory per reader, as whole parquet row groups.
IMAGE_CACHE_BYTES = 256 * 2**20


@dataclasses.dataclass(frozen=True)
class VideoSegment:
    """Where one episode's frames of one camera live: a file and the time range inside it."""

    path: str  # relative to the dataset root
    from_timestamp: float
    to_timestamp: float


@dataclasses.dataclass(frozen=True)
class EpisodeInfo:
    """One episode: its frames are positions [from_index, to_index) of the dataset."""

    episode_index: int
    length: int
    from_index: int
    to_index: int
    tasks: tuple[str, ...]
    data_path: str  # relative path of the parquet file holding its frames
    videos: Mapping[str, VideoSegment] = dataclasses.field(default_factory=dict)


def read_parquet(path: pathlib.Path, columns: list[str] | None = None) -> pa.Table:
    """`pq.read_table` with one clear error for a missing, truncated or corrupt file."""
    if not path.is_file():
        raise errors.DatasetError(f"Parquet file {path} is missing; restore it from the original dataset.")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise errors.DatasetError(
            f"Parquet file {path} is truncated or corrupt ({exc}); restore it from the original dataset."
        ) from exc


def _parquet_file(path: pathlib.Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise errors.DatasetError(
            f"Parquet file {path} is truncated or corrupt ({exc}); restore it from the original dataset."
        ) from exc


def read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise errors.DatasetError(f"{path} is missing; restore the dataset's meta/ folder.")
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise errors.DatasetError(f"{path} line {line_no} is not valid JSON ({exc}); the file is corrupt.") from exc
    return rows


def _column_to_numpy(column: pa.ChunkedArray, feature: Mapping[str, Any] | None, name: str) -> np.ndarray:
    """A parquet column as numpy: scalars -> [N], fixed-size lists -> [N, D], strings -> str array [N]."""
    column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    kind = column.type
    if pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind):
        values = column.flatten().to_numpy(zero_copy_only=False)
        n = len(column)
        return values.reshape(n, -1) if n else values.reshape(0, *(feature or {}).get("shape", [0]))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # A null cell reads as "" (never the text "None"), so validation can name it.
        return np.asarray(["" if v is None else v for v in column.to_pylist()], dtype=str)
    if pa.types.is_struct(kind):
        raise errors.DatasetError(f"Column {name!r} holds images; read them per frame with ds[i], not column().")
    return column.to_numpy(zero_copy_only=False)


def _decode_dictionaries(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns (how pandas writes categoricals) as plain columns of their values, so a valid
    `adv_ind` reads as strings, not objects, and episode files that encode a column differently still concatenate."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    return table


def _concat(tables: list[pa.Table], paths: list[str]) -> pa.Table:
    """The data files as one table. Types that hold the same values are cast to one (string / large_string, int32 /
    int64: v2.1 episode files written by different tools differ so); types that do not are refused, naming files."""
    if not tables:
        return pa.table({})
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        first = tables[0].schema
        for table, path in zip(tables[1:], paths[1:], strict=True):
            for field in table.schema:
                if field.name in first.names and first.field(field.name).type != field.type:
                    raise errors.DatasetError(
                        f"Column {field.name!r} is {first.field(field.name).type} in {paths[0]} but {field.type} in "
                        f"{path}, and the two cannot be read as one column; rewrite the odd files so that every data "
                        "file stores the column as one type."
                    ) from exc
        raise errors.DatasetError(
            f"The data files of this dataset ({paths[0]}, ...) cannot be read as one table ({exc}); rewrite them so "
            "that every data file has the same columns and types."
        ) from exc


class LeRobotDataset:
    """A LeRobot dataset on disk; see the module docstring. Create with `LeRobotDataset.open`."""

    def __init__(
        self,
        root: pathlib.Path,
        info: dict[str, Any],
        tasks: dict[int, str],
        episodes: list[EpisodeInfo],
        table: pa.Table,
        data_files: list[tuple[str, int]],
        *,
        decoder: video_lib.VideoDecoder | None = None,
    ):
        self.root = root
        self.info = info
        self.version: str = info["codebase_version"]
        self.fps: int = int(info["fps"])
        self.features: dict[str, dict[str, Any]] = info["features"]
        self.robot_type: str | None = info.get("robot_type")
        self.tasks = tasks
        self.episodes = episodes
        self._table = table
        self._columns: dict[str, np.ndarray] = {}
        self._float_columns: dict[str, np.ndarray] = {}
        # Data files in position order: (relative path, first position); image rows are read from them.
        self._data_files = data_files
        self._data_starts = [start for _, start in data_files]
        self._episode_starts = np.asarray([ep.from_index for ep in episodes], dtype=np.int64)
        self._decoder = decoder or video_lib.VideoDecoder()
        self._row_groups: collections.OrderedDict[tuple[str, int], pa.Table] = collections.OrderedDict()
        self._row_group_bytes = 0
        self._row_group_bounds: dict[str, list[int]] = {}
        self._lock = threading.Lock()  # guards the small caches above for thread-pool loaders
        self.video_keys = info_lib.camera_keys(self.features, "video")
        self.image_keys = info_lib.camera_keys(self.features, "image")

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for process workers: caches and locks are rebuilt on the other side."""
        state = self.__dict__.copy()
        state.update(
            _lock=None, _row_groups=collections.OrderedDict(), _row_group_bytes=0, _columns={}, _float_columns={}
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, root_or_repo_id: str | os.PathLike, *, decoder: video_lib.VideoDecoder | None = None):
        """Opens a local dataset root or a `<org>/<name>` repo id under `$HF_LEROBOT_HOME`."""
        root = info_lib.resolve_root(root_or_repo_id)
        info = info_lib.load_info(root)
        if info_lib.has_episode_files(info["codebase_version"]):
            tasks, raw_episodes = _load_v21_meta(root, info)
        else:
            tasks, raw_episodes = _load_v30_meta(root, info)
        cameras = set(info_lib.camera_keys(info["features"], "video") + info_lib.camera_keys(info["features"], "image"))
        data_paths = list(dict.fromkeys(ep["data_path"] for ep in raw_episodes))
        tables, data_files, start = [], [], 0
        for rel in data_paths:
            path = root / rel
            if not path.is_file():
                raise errors.DatasetError(f"Data file {path} is missing; restore the dataset's data/ folder.")
            schema = _parquet_file(path).schema_arrow
            wanted = [name for name in schema.names if name not in cameras]
            table = _decode_dictionaries(read_parquet(path, columns=wanted))
            tables.append(table)
            data_files.append((rel, start))
            start += table.num_rows
        table = _concat(tables, data_paths)
        episodes = _locate_episodes(root, info, raw_episodes, table)
        return cls(root, info, tasks, episodes, table, data_files, decoder=decoder)

    # ------------------------------------------------------------------------------------------ basics
    @property
    def num_frames(self) -> int:
        return self._table.num_rows

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (
            f"LeRobotDataset({str(self.root)!r}, version={self.version}, episodes={self.num_episodes}, "
            f"frames={self.num_frames}, fps={self.fps})"
        )

    @property
    def camera_keys(self) -> list[str]:
        return self.video_keys + self.image_keys

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """Dataset-level feature stats: meta/stats.json (v2.0, v3.0) or aggregated episodes_stats.jsonl (v2.1)."""
        if self.version != info_lib.V21:
            path = self.root / info_lib.STATS_PATH
            raw = json.loads(path.read_text()) if path.is_file() else {}
            return {k: {s: np.asarray(v) for s, v in d.items()} for k, d in raw.items()}
        rows = read_jsonl(self.root / info_lib.V21_EPISODES_STATS_PATH)
        per_episode = [{k: {s: np.asarray(v) for s, v in d.items()} for k, d in r["stats"].items()} for r in rows]
        return episode_stats.aggregate(per_episode)

    def has_column(self, name: str) -> bool:
        """True for a non-camera column present in the parquet files (video/image features are not columns)."""
        return name in self._table.column_names

    def column(self, name: str) -> np.ndarray:
        """All frames of a non-camera column, in position order: [N] for scalars, [N, D] for vectors, str [N]."""
        cached = self._columns.get(name)
        if cached is not None:
            return cached
        if name in self.camera_keys:
            raise errors.DatasetError(
                f"{name!r} is a camera feature of {self.root}; camera frames are read per frame with ds[i], "
                "not as a column."
            )
        if name not in self._table.column_names:
            raise errors.DatasetError(
                f"Dataset {self.root} has no column {name!r} (columns: {', '.join(self._table.column_names)}); "
                "add it (e.g. with copy_with_columns) or ask for an existing one."
            )
        feature = self.features.get(name)
        array = _column_to_numpy(self._table.column(name), feature, name)
        if feature is not None and info_lib.is_scalar_feature(feature) and array.ndim == 2 and array.shape[1] == 1:
            array = array.reshape(len(array))  # a shape-[1] feature stored as 1-element lists by another tool
        array.setflags(write=False)
        self._columns[name] = array
        return array

    def episode_for_frame(self, i: int) -> EpisodeInfo:
        return self.episodes[int(np.searchsorted(self._episode_starts, i, side="right")) - 1]

    def _check_index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.num_frames
        if not 0 <= i < self.num_frames:
            raise IndexError(f"Frame {i} is out of range for a dataset of {self.num_frames} frames.")
        return i

    # -------------------------------------------------------------------------------------- frame access
    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.get(i)

    def __iter__(self):
        for i in range(self.num_frames):
            yield self.get(i)

    def get(self, i: int, keys: Iterable[str] | None = None) -> dict[str, Any]:
        """Frame i with the requested features decoded (all when `keys` is None).

        Cameras come back as uint8 [H, W, C]; numeric features with the shape declared in info.json (a
        shape-[1] feature is a 1-element array); string features as `str`. "task", "episode_index",
        "frame_index", "index" and "timestamp" are always included.
        """
        i = self._check_index(i)
        wanted = list(self.features) if keys is None else list(keys)
        for key in wanted:
            if key not in self.features and key != "task":
                raise errors.DatasetError(
                    f"Dataset {self.root} has no feature {key!r} (features: {', '.join(self.features)}); "
                    "request one of those."
                )
        for key in ("episode_index", "frame_index", "index", "timestamp"):
            if key not in wanted and self.has_column(key):
                wanted.append(key)
        item: dict[str, Any] = {}
        for key in wanted:
            if key == "task":
                continue
            feature = self.features[key]
            if feature["dtype"] == "video":
                item[key] = self._video_frame(key, i)
            elif feature["dtype"] == "image":
                item[key] = self._image_frame(key, i)
            else:
                item[key] = self._value(key, i)
        item["task"] = self.tasks[int(self.column("task_index")[i])]
        return item

    def _value(self, key: str, i: int) -> np.ndarray | str:
        column = self.column(key)
        feature = self.features[key]
        if feature["dtype"] == "string":
            return str(column[i])
        return np.array(column[i]).reshape(tuple(feature["shape"]))

    def action_chunk(self, i: int, key: str = "action", horizon: int = 50) -> tuple[np.ndarray, np.ndarray]:
        """The next `horizon` values of `key` from frame i within its episode, as float32 [H, D].

        Past the episode's end the last frame repeats and `is_pad` is True (LeRobot's delta_timestamps
        padding, which openpi's action chunks use).
        """
        i = self._check_index(i)
        if horizon < 1:
            raise errors.ConfigError(f"action_chunk horizon must be >= 1, got {horizon}.")
        values = self._float_columns.get(key)
        if values is None:
            column = self.column(key)
            values = np.asarray(column, dtype=np.float32).reshape(len(column), -1)
            self._float_columns[key] = values
        episode = self.episode_for_frame(i)
        idx = np.arange(i, i + horizon)
        is_pad = idx >= episode.to_index
        return values[np.minimum(idx, episode.to_index - 1)], is_pad

    # --------------------------------------------------------------------------------------------- cameras
    def check_videos(self) -> None:
        """Checks, without decoding, that every video file exists, opens, and covers its episodes' frames.

        Demuxing reads packet headers only, so this is cheap enough to run before a long training or
        labelling job, which then cannot fail hours in on a truncated or missing mp4.
        """
        infos: dict[str, dict[str, Any]] = {}
        for episode in self.episodes:
            for key, segment in episode.videos.items():
                path = self.root / segment.path
                if segment.path not in infos:
                    if not path.is_file():
                        raise errors.DatasetError(
                            f"Video file {path} (camera {key!r}, episode {episode.episode_index}) is missing; "
                            "restore the dataset's videos/ folder."
                        )
                    infos[segment.path] = video_lib.video_info(path)
                last_needed = segment.from_timestamp + (episode.length - 1) / self.fps
                last = infos[segment.path]["last_timestamp"]
                if last < last_needed - 1e-4:
                    raise errors.DatasetError(
                        f"Video file {path} ends at {last:.4f}s but episode {episode.episode_index} needs frames up "
                        f"to {last_needed:.4f}s (camera {key!r}); the video is truncated, restore it."
                    )

    def _video_frame(self, key: str, i: int) -> np.ndarray:
        episode = self.episode_for_frame(i)
        segment = episode.videos.get(key)
        if segment is None:
            raise errors.DatasetError(
                f"Episode {episode.episode_index} of {self.root} has no video location for {key!r}; "
                "its episode metadata is incomplete."
            )
        timestamp = float(self.column("timestamp")[i])
        t = segment.from_timestamp + timestamp
        if t < segment.from_timestamp - 1e-4 or t >= segment.to_timestamp + 1e-4:
            raise errors.DatasetError(
                f"Frame {i} (episode {episode.episode_index}) has timestamp {timestamp:.4f}s, outside its video "
                f"range [{segment.from_timestamp:.4f}, {segment.to_timestamp:.4f})s in {segment.path}; the "
                "timestamp column or the episode metadata is wrong."
            )
        frame = self._decoder.frame(self.root / segment.path, t)
        return self._check_shape(key, frame, i, segment.path)

    def _check_shape(self, key: str, frame: np.ndarray, i: int, where: str) -> np.ndarray:
        expected = tuple(self.features[key]["shape"])
        if frame.shape != expected:
            raise errors.DatasetError(
                f"Camera {key!r} frame {i} from {where} has shape {list(frame.shape)}, but info.json declares "
                f"{list(expected)}; fix the feature's shape in meta/info.json or re-encode the images."
            )
        return frame

    def _image_frame(self, key: str, i: int) -> np.ndarray:
        file_no = bisect.bisect_right(self._data_starts, i) - 1
        rel, start = self._data_files[file_no]
        row = i - start
        bounds = self._row_group_bounds.get(rel)
        if bounds is None:
            meta = _parquet_file(self.root / rel).metadata
            bounds = [0]
            for g in range(meta.num_row_groups):
                bounds.append(bounds[-1] + meta.row_group(g).num_rows)
            self._row_group_bounds[rel] = bounds
        group = bisect.bisect_right(bounds, row) - 1
        with self._lock:
            table = self._row_groups.get((rel, group))
            if table is not None:
                self._row_groups.move_to_end((rel, group))
        if table is None:
            try:
                table = _parquet_file(self.root / rel).read_row_group(group, columns=self.image_keys)
            except (pa.ArrowException, OSError) as exc:
                raise errors.DatasetError(
                    f"Images in {self.root / rel} (row group {group}) cannot be read ({exc}); the file is corrupt."
                ) from exc
            with self._lock:
                self._row_groups[(rel, group)] = table
                self._row_group_bytes += table.nbytes
                # Least recently used out once over budget: random access (a shuffled training sampler) over a
                # dataset whose encoded images fit the budget reads every row group once, not once per frame.
                while self._row_group_bytes > IMAGE_CACHE_BYTES and len(self._row_groups) > 1:
                    _, old = self._row_groups.popitem(last=False)
                    self._row_group_bytes -= old.nbytes
        cell = table.column(key)[row - bounds[group]].as_py()
        data = cell.get("bytes") if isinstance(cell, dict) else None
        try:
            if data is None and isinstance(cell, dict) and cell.get("path"):
                data = (self.root / cell["path"]).read_bytes()
            if data is None:
                raise ValueError("the cell holds neither bytes nor a path")
            with PIL.Image.open(io.BytesIO(data)) as image:
                array = np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise errors.DatasetError(
                f"Image {key!r} of frame {i} in {self.root / rel} cannot be decoded ({exc}); the stored image "
                "is corrupt, restore the file."
            ) from exc
        return self._check_shape(key, array, i, rel)


# ------------------------------------------------------------------------------------------ metadata loading
def _load_v21_meta(root: pathlib.Path, info: dict[str, Any]) -> tuple[dict[int, str], list[dict[str, Any]]]:
    tasks = {int(r["task_index"]): str(r["task"]) for r in read_jsonl(root / info_lib.V21_TASKS_PATH)}
    rows = sorted(read_jsonl(root / info_lib.V21_EPISODES_PATH), key=lambda r: r["episode_index"])
    chunks_size = int(info.get("chunks_size", info_lib.DEFAULT_CHUNKS_SIZE))
    data_template = info.get("data_path", info_lib.V21_DATA_PATH)
    video_template = info.get("video_path") or info_lib.V21_VIDEO_PATH
    video_keys = info_lib.camera_keys(info["features"], "video")
    episodes = []
    for row in rows:
        ep = int(row["episode_index"])
        chunk = ep // chunks_size
        length = int(row["length"])
        videos = {
            key: VideoSegment(
                video_template.format(episode_chunk=chunk, video_key=key, episode_index=ep), 0.0, length / info["fps"]
            )
            for key in video_keys
        }
        episodes.append(
            {
                "episode_index": ep,
                "length": length,
                "tasks": tuple(row.get("tasks", ())),
                "data_path": data_template.format(episode_chunk=chunk, episode_index=ep),
                "videos": videos,
            }
        )
    return tasks, episodes


def load_v30_tasks(path: pathlib.Path) -> dict[int, str]:
    """meta/tasks.parquet: LeRobot writes a pandas frame indexed by the task string."""
    table = read_parquet(path)
    names = table.column_names
    task_col = "task" if "task" in names else None
    if task_col is None:
        pandas_meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
        index_cols = [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)]
        task_col = index_cols[0] if index_cols else ("__index_level_0__" if "__index_level_0__" in names else None)
    if task_col is None or "task_index" not in names:
        raise errors.DatasetError(
            f"{path} has no task strings and task_index column (columns: {names}); the file is corrupt."
        )
    return {
        int(i): str(t)
        for i, t in zip(table.column("task_index").to_pylist(), table.column(task_col).to_pylist(), strict=True)
    }


def _load_v30_meta(root: pathlib.Path, info: dict[str, Any]) -> tuple[dict[int, str], list[dict[str, Any]]]:
    tasks = load_v30_tasks(root / info_lib.V30_TASKS_PATH)
    episode_files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not episode_files:
        raise errors.DatasetError(
            f"{root / 'meta' / 'episodes'} holds no chunk-XXX/file-XXX.parquet; the episode metadata of this v3.0 "
            "dataset is missing, restore the meta/ folder."
        )
    data_template = info.get("data_path", info_lib.V30_DATA_PATH)
    video_template = info.get("video_path") or info_lib.V30_VIDEO_PATH
    video_keys = info_lib.camera_keys(info["features"], "video")
    rows: list[dict[str, Any]] = []
    for path in episode_files:
        schema = _parquet_file(path).schema_arrow
        columns = [n for n in schema.names if not n.startswith("stats/")]
        needed = ["episode_index", "length", "data/chunk_index", "data/file_index"]
        needed += [f"videos/{k}/{s}" for k in video_keys for s in ("chunk_index", "file_index", "from_timestamp")]
        missing = [n for n in needed if n not in columns]
        if missing:
            raise errors.DatasetError(
                f"Episode metadata {path} lacks the columns {missing}; it was not written by LeRobot v3.0 or is "
                "corrupt."
            )
        rows.extend(read_parquet(path, columns=columns).to_pylist())
    rows.sort(key=lambda r: r["episode_index"])
    fps = info["fps"]
    episodes = []
    for row in rows:
        videos = {}
        for key in video_keys:
            start = float(row[f"videos/{key}/from_timestamp"])
            end = row.get(f"videos/{key}/to_timestamp")
            videos[key] = VideoSegment(
                video_template.format(
                    video_key=key,
                    chunk_index=int(row[f"videos/{key}/chunk_index"]),
                    file_index=int(row[f"videos/{key}/file_index"]),
                ),
                start,
                float(end) if end is not None else start + row["length"] / fps,
            )
        episodes.append(
            {
                "episode_index": int(row["episode_index"]),
                "length": int(row["length"]),
                "tasks": tuple(row.get("tasks") or ()),
                "data_path": data_template.format(
                    chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"])
                ),
                "videos": videos,
            }
        )
    return tasks, episodes


def _locate_episodes(
    root: pathlib.Path,
    info: dict[str, Any],
    raw: list[dict[str, Any]],
    table: pa.Table,
) -> list[EpisodeInfo]:
    """Finds each episode's contiguous rows in the concatenated data and checks them against the metadata."""
    if "episode_index" not in table.column_names:
        raise errors.DatasetError(f"The data files of {root} have no episode_index column; they are not LeRobot data.")
    episode_column = table.column("episode_index").to_numpy()
    boundaries = np.flatnonzero(np.diff(episode_column)) + 1
    starts = np.concatenate([[0], boundaries]).astype(np.int64) if len(episode_column) else np.zeros(0, np.int64)
    ends = np.concatenate([boundaries, [len(episode_column)]]).astype(np.int64) if len(episode_column) else starts
    runs = {}
    for s, e in zip(starts, ends, strict=True):
        ep = int(episode_column[s])
        if ep in runs:
            raise errors.DatasetError(
                f"Episode {ep} of {root} is split into non-contiguous rows in its data files; the data is corrupt."
            )
        runs[ep] = (int(s), int(e))
    episodes = []
    for row in raw:
        ep = row["episode_index"]
        if ep not in runs:
            raise errors.DatasetError(
                f"Episode {ep} is listed in the metadata of {root} but has no rows in {row['data_path']}; the data "
                "file is truncated or belongs to another dataset."
            )
        start, end = runs.pop(ep)
        if end - start != row["length"]:
            raise errors.DatasetError(
                f"Episode {ep} of {root} has {end - start} rows in {row['data_path']} but its metadata says length "
                f"{row['length']}; the data file or meta/episodes is corrupt."
            )
        episodes.append(
            EpisodeInfo(
                episode_index=ep,
                length=row["length"],
                from_index=start,
                to_index=end,
                tasks=row["tasks"],
                data_path=row["data_path"],
                videos=row["videos"],
            )
        )
    if runs:
        extra = sorted(runs)[:5]
        raise errors.DatasetError(
            f"The data files of {root} hold episodes {extra} that meta/ does not list; the metadata is incomplete."
        )
    episodes.sort(key=lambda e: e.from_index)
    if table.num_rows != info["total_frames"]:
        raise errors.DatasetError(
            f"{root / info_lib.INFO_PATH} says total_frames={info['total_frames']} but the data files hold "
            f"{table.num_rows} frames; a data file is missing or truncated."
        )
    return episodes
