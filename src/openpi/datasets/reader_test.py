"""The reader against datasets written by the real LeRobot library (tests/fixtures/lerobot), and its errors."""

import json
import pathlib
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openpi.datasets import lerobot
from openpi.shared import errors

# Datasets written by the real LeRobot library, shipped with the repository (tests/fixtures/README.md).
FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "lerobot"
ALL = ("v2.1_video", "v3.0_video", "v3.0_image")
VIDEO = ("v2.1_video", "v3.0_video")
NON_CAMERA = ("observation.state", "action", "intervention", "reward", "reward_label", "value_label", "adv_ind")


def fixture_path(name: str) -> pathlib.Path:
    """A LeRobot-written fixture (`""`: the folder itself); a missing one fails, it never skips."""
    path = FIXTURES / name
    assert path.exists(), f"LeRobot fixture {path} is missing from the checkout (see tests/fixtures/README.md)"
    return path


def copy_fixture(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
    dst = tmp_path / name
    shutil.copytree(fixture_path(name), dst)
    return dst


@pytest.fixture(scope="module")
def expected():
    return json.loads((fixture_path("") / "expected_values.json").read_text())


@pytest.fixture(scope="module")
def source_frames():
    with np.load(fixture_path("") / "source_frames.npz") as npz:
        return dict(npz)


@pytest.mark.parametrize("name", ALL)
def test_metadata(name):
    ds = lerobot.LeRobotDataset.open(fixture_path(name))
    assert ds.version == name[:4]
    assert (ds.fps, ds.robot_type, ds.num_frames, len(ds), ds.num_episodes) == (10, "yam", 48, 48, 3)
    assert ds.tasks == {0: "pick up the red cube", 1: "fold the towel"}
    assert [(e.episode_index, e.length, e.from_index, e.to_index) for e in ds.episodes] == [
        (0, 12, 0, 12),
        (1, 16, 12, 28),
        (2, 20, 28, 48),
    ]
    assert [e.tasks for e in ds.episodes] == [("pick up the red cube",), ("fold the towel",), ("pick up the red cube",)]
    cameras = [f"observation.images.{c}" for c in ("head_camera", "left_wrist_camera", "right_wrist_camera")]
    assert (ds.video_keys, ds.image_keys) == ((cameras, []) if "video" in name else ([], cameras))
    assert ds.features["observation.state"]["shape"] == [14]
    assert ds.has_column("adv_ind") and not ds.has_column("observation.images.head_camera")


@pytest.mark.parametrize("name", ALL)
def test_columns_equal_expected_values(name, expected):
    ds = lerobot.LeRobotDataset.open(fixture_path(name))
    frames = expected["frames"]
    for key in (*NON_CAMERA, "timestamp", "frame_index", "episode_index", "index", "task_index"):
        column = ds.column(key)
        want = np.asarray([f[key] for f in frames])
        if key == "adv_ind":
            assert column.dtype.kind == "U" and column.tolist() == want.tolist()
        else:
            assert column.shape == want.shape, key
            np.testing.assert_array_equal(column, want.astype(column.dtype), err_msg=key)
    assert ds.column("observation.state").dtype == np.float32 and ds.column("intervention").dtype == np.int64
    # value_label on the last frame is +0.0, not -0.0.
    assert not np.signbit(ds.column("value_label")[11])


@pytest.mark.parametrize("name", ALL)
def test_get_returns_declared_shapes_and_values(name, expected):
    ds = lerobot.LeRobotDataset.open(fixture_path(name))
    for i in (0, 13, 27, 47):
        item, want = ds[i], expected["frames"][i]
        assert item["task"] == want["task"]
        assert item["adv_ind"] == want["adv_ind"] and isinstance(item["adv_ind"], str)
        np.testing.assert_array_equal(item["observation.state"], np.float32(want["observation.state"]))
        assert item["reward"].shape == (1,) and item["reward"][0] == np.float32(want["reward"])
        assert item["intervention"].dtype == np.int64 and item["intervention"][0] == want["intervention"]
        assert item["episode_index"][0] == want["episode_index"] and item["frame_index"][0] == want["frame_index"]
        assert item["index"][0] == i and item["timestamp"][0] == np.float32(want["timestamp"])
        for key in ds.camera_keys:
            assert item[key].shape == (64, 80, 3) and item[key].dtype == np.uint8
    subset = ds.get(5, keys=["action"])
    assert set(subset) == {"action", "task", "episode_index", "frame_index", "index", "timestamp"}
    assert ds[-1]["index"][0] == 47
    with pytest.raises(IndexError):
        ds[48]


def _brightest_cell(image: np.ndarray) -> int:
    cells = image.reshape(4, 16, 5, 16, 3).mean(axis=(1, 3, 4))
    return int(np.argmax(cells))


@pytest.mark.parametrize("name", ALL)
def test_pixels_match_source_frames(name, source_frames, expected):
    ds = lerobot.LeRobotDataset.open(fixture_path(name))
    reference = None
    if name in VIDEO:
        with np.load(fixture_path("") / "decoded_reference" / f"{name}.npz") as npz:
            reference = dict(npz)
    # Random order exercises seeking backwards and forwards within and across episodes.
    order = np.random.default_rng(0).permutation(len(ds))
    for i in order:
        item = ds[int(i)]
        e, f = int(item["episode_index"][0]), int(item["frame_index"][0])
        for key in ds.camera_keys:
            frame_key = f"episode_{e:03d}/{key}"
            source = source_frames[frame_key][f]
            error = np.abs(item[key].astype(np.int16) - source).mean()
            if reference is None:
                np.testing.assert_array_equal(item[key], source)  # image mode is lossless
            else:
                assert error < 2.5, (i, key, error)
                np.testing.assert_array_equal(item[key], reference[frame_key][f])  # bit-exact to LeRobot
            assert _brightest_cell(item[key]) == f
            background = np.median(item[key][np.all(item[key] != 255, axis=-1)], axis=0)
            assert np.all(np.abs(background - expected["frames"][int(i)]["background_rgb"][key]) <= 3)


def test_action_chunk_pads_with_last_frame():
    ds = lerobot.LeRobotDataset.open(fixture_path("v3.0_video"))
    chunk, is_pad = ds.action_chunk(9, horizon=5)  # episode 0 has frames 0..11
    assert chunk.shape == (5, 14) and chunk.dtype == np.float32
    np.testing.assert_array_equal(is_pad, [False, False, False, True, True])
    np.testing.assert_array_equal(chunk[:, 0], [90.5, 100.5, 110.5, 110.5, 110.5])
    chunk, is_pad = ds.action_chunk(12, horizon=3)  # first frame of episode 1
    np.testing.assert_array_equal(chunk[:, 0], [1000.5, 1010.5, 1020.5])
    assert not is_pad.any()
    chunk, is_pad = ds.action_chunk(47, key="value_label", horizon=2)
    assert chunk.shape == (2, 1) and is_pad.tolist() == [False, True]


def test_open_by_repo_id_under_hf_lerobot_home(tmp_path, monkeypatch):
    copy_fixture("v3.0_image", tmp_path / "home" / "fixtures")
    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path / "home"))
    ds = lerobot.LeRobotDataset.open("fixtures/v3.0_image")
    assert ds.root == (tmp_path / "home" / "fixtures" / "v3.0_image").resolve()
    with pytest.raises(errors.DatasetError, match="LeRobot cache"):
        lerobot.LeRobotDataset.open("fixtures/does_not_exist")


# ------------------------------------------------------------------------------------------- bad input
def test_missing_info_json(tmp_path):
    root = copy_fixture("v3.0_video", tmp_path)
    (root / "meta" / "info.json").unlink()
    with pytest.raises(errors.DatasetError, match=r"meta/info.json"):
        lerobot.LeRobotDataset.open(root)
    with pytest.raises(errors.DatasetError, match="does not exist"):
        lerobot.LeRobotDataset.open(tmp_path / "nothing_here")


def test_unknown_codebase_version(tmp_path):
    root = copy_fixture("v2.1_video", tmp_path)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["codebase_version"] = "v1.6"
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(errors.DatasetError, match=r"codebase_version 'v1.6'.*convert"):
        lerobot.LeRobotDataset.open(root)


def test_missing_column_and_feature():
    ds = lerobot.LeRobotDataset.open(fixture_path("v3.0_image"))
    with pytest.raises(errors.DatasetError, match="no column 'value_lable'"):
        ds.column("value_lable")
    with pytest.raises(errors.DatasetError, match=r"no feature 'observation\.images\.top'"):
        ds.get(0, keys=["observation.images.top"])
    with pytest.raises(errors.DatasetError, match="camera feature"):
        ds.column("observation.images.head_camera")


@pytest.mark.parametrize("name", ["v3.0_video", "v2.1_video"])
def test_truncated_parquet(tmp_path, name):
    root = copy_fixture(name, tmp_path)
    path = sorted((root / "data").rglob("*.parquet"))[-1]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(errors.DatasetError, match=rf"{path.name} is truncated or corrupt"):
        lerobot.LeRobotDataset.open(root)


def test_corrupt_and_missing_mp4(tmp_path):
    root = copy_fixture("v3.0_video", tmp_path)
    head = root / "videos" / "observation.images.head_camera" / "chunk-000" / "file-000.mp4"
    head.write_bytes(b"\x00" * 64 + head.read_bytes()[64:200])
    ds = lerobot.LeRobotDataset.open(root)
    with pytest.raises(errors.DatasetError, match=r"file-000.mp4.*corrupt"):
        ds[3]
    left = root / "videos" / "observation.images.left_wrist_camera" / "chunk-000" / "file-000.mp4"
    left.unlink()
    with pytest.raises(errors.DatasetError, match=r"Video file .*left_wrist_camera.* is missing"):
        ds.get(3, keys=["observation.images.left_wrist_camera"])
    # Non-camera access still works without decoding.
    assert ds.get(3, keys=["action"])["action"][0] == 30.5


def test_truncated_mp4_names_the_time(tmp_path):
    root = copy_fixture("v2.1_video", tmp_path)
    video = root / "videos" / "chunk-000" / "observation.images.head_camera" / "episode_000002.mp4"
    ds = lerobot.LeRobotDataset.open(root)
    # Replace episode 2's video by episode 0's, which is 12 frames long instead of 20.
    shutil.copyfile(video.with_name("episode_000000.mp4"), video)
    with pytest.raises(errors.DatasetError, match=r"t=1\.5000s is past the end"):
        ds.get(28 + 15, keys=["observation.images.head_camera"])


def test_image_shape_mismatch(tmp_path):
    root = copy_fixture("v3.0_image", tmp_path)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"]["observation.images.head_camera"]["shape"] = [224, 224, 3]
    (root / "meta" / "info.json").write_text(json.dumps(info))
    ds = lerobot.LeRobotDataset.open(root)
    with pytest.raises(errors.DatasetError, match=r"frame 7 .* shape \[64, 80, 3\].*declares \[224, 224, 3\]"):
        ds[7]


def test_timestamp_outside_video_range(tmp_path):
    root = copy_fixture("v3.0_video", tmp_path)
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    timestamps = table.column("timestamp").to_numpy().copy()
    timestamps[5] = 3.0  # episode 0 spans [0, 1.2) s of the video
    index = table.schema.get_field_index("timestamp")
    table = table.set_column(index, table.schema.field(index), pa.array(timestamps, pa.float32()))
    pq.write_table(table, path)
    ds = lerobot.LeRobotDataset.open(root)
    with pytest.raises(errors.DatasetError, match=r"Frame 5 \(episode 0\) has timestamp 3.0000s, outside"):
        ds[5]
    assert ds[6]["frame_index"][0] == 6


def test_metadata_and_data_disagree(tmp_path):
    root = copy_fixture("v2.1_video", tmp_path)
    lines = (root / "meta" / "episodes.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"length": 16', '"length": 17')
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(errors.DatasetError, match=r"Episode 1 .* 16 rows .* length 17"):
        lerobot.LeRobotDataset.open(root)


def test_corrupt_png_in_image_mode(tmp_path):
    root = copy_fixture("v3.0_image", tmp_path)
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    key = "observation.images.left_wrist_camera"
    cells = table.column(key).to_pylist()
    cells[20] = {"bytes": cells[20]["bytes"][:40], "path": cells[20]["path"]}
    index = table.schema.get_field_index(key)
    table = table.set_column(index, table.schema.field(index), pa.array(cells, table.schema.field(index).type))
    pq.write_table(table, path, row_group_size=16)
    ds = lerobot.LeRobotDataset.open(root)
    with pytest.raises(
        errors.DatasetError, match=r"Image 'observation.images.left_wrist_camera' of frame 20 .* corrupt"
    ):
        ds[20]
    assert ds[21][key].shape == (64, 80, 3)


def _read_frames(ds, indices):
    return [(int(i), ds.get(int(i), keys=ds.video_keys)) for i in indices]


def test_threads_and_processes_decode_their_own_frames():
    import concurrent.futures
    import multiprocessing
    import pickle

    ds = lerobot.LeRobotDataset.open(fixture_path("v3.0_video"))
    with np.load(fixture_path("") / "decoded_reference" / "v3.0_video.npz") as npz:
        reference = dict(npz)

    def check(results):
        for i, item in results:
            episode = ds.episode_for_frame(i)
            for key in ds.video_keys:
                want = reference[f"episode_{episode.episode_index:03d}/{key}"][i - episode.from_index]
                np.testing.assert_array_equal(item[key], want)

    rng = np.random.default_rng(1)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        chunks = [rng.integers(0, 48, 24) for _ in range(4)]
        for results in pool.map(lambda idx: _read_frames(ds, idx), chunks):
            check(results)
    # A pickled dataset (what a spawned worker receives) reopens its own files.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        check(pool.submit(_read_frames, pickle.loads(pickle.dumps(ds)), [47, 3, 20]).result())


def test_null_string_cells_read_as_empty(tmp_path):
    root = copy_fixture("v3.0_image", tmp_path)
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    cells = table.column("adv_ind").to_pylist()
    cells[4] = None
    index = table.schema.get_field_index("adv_ind")
    table = table.set_column(index, table.schema.field(index), pa.array(cells, pa.string()))
    pq.write_table(table, path)
    ds = lerobot.LeRobotDataset.open(root)
    assert ds.column("adv_ind")[4] == "" and ds[4]["adv_ind"] == "" and ds.column("adv_ind")[5] == "none"


def make_v20(tmp_path: pathlib.Path) -> pathlib.Path:
    """The v2.1 fixture turned into the v2.0 layout openpi's LeRobot pin writes (stats.json, no episode stats)."""
    root = copy_fixture("v2.1_video", tmp_path)
    stats = lerobot.LeRobotDataset.open(root).stats
    (root / "meta" / "episodes_stats.jsonl").unlink()
    (root / "meta" / "stats.json").write_text(
        json.dumps({k: {s: v.tolist() for s, v in d.items()} for k, d in stats.items()})
    )
    info = json.loads((root / "meta" / "info.json").read_text())
    info["codebase_version"] = "v2.0"
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return root


def test_reads_v20(tmp_path, expected):
    ds = lerobot.LeRobotDataset.open(make_v20(tmp_path))
    v21 = lerobot.LeRobotDataset.open(fixture_path("v2.1_video"))
    assert ds.version == "v2.0" and ds.num_frames == 48 and ds.tasks == v21.tasks
    for key in NON_CAMERA:
        np.testing.assert_array_equal(ds.column(key), v21.column(key))
    for i in (0, 20, 47):
        for key in ds.video_keys:
            np.testing.assert_array_equal(ds[i][key], v21[i][key])
    np.testing.assert_allclose(ds.stats["action"]["mean"], v21.stats["action"]["mean"])


def test_shape_one_feature_stored_as_one_element_lists(tmp_path):
    root = copy_fixture("v3.0_image", tmp_path)
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    index = table.schema.get_field_index("reward")
    values = pa.array(table.column("reward").to_numpy(), pa.float32())
    lists = pa.FixedSizeListArray.from_arrays(values, 1)
    table = table.set_column(index, pa.field("reward", lists.type), lists)
    pq.write_table(table, path)
    ds = lerobot.LeRobotDataset.open(root)
    assert ds.column("reward").shape == (48,) and ds.column("reward")[11] == 1.0
    assert ds[11]["reward"].shape == (1,) and ds[11]["reward"][0] == 1.0


def test_check_videos_before_a_long_job(tmp_path):
    root = copy_fixture("v2.1_video", tmp_path)
    lerobot.LeRobotDataset.open(root).check_videos()
    video = root / "videos" / "chunk-000" / "observation.images.left_wrist_camera" / "episode_000001.mp4"
    shutil.copyfile(video.with_name("episode_000000.mp4"), video)  # 12 frames where 16 are needed
    with pytest.raises(errors.DatasetError, match=r"ends at 1.1000s but episode 1 needs frames up to 1.5000s"):
        lerobot.LeRobotDataset.open(root).check_videos()
    video.write_bytes(b"not an mp4")
    with pytest.raises(errors.DatasetError, match=r"episode_000001\.mp4 cannot be read"):
        lerobot.LeRobotDataset.open(root).check_videos()
    video.unlink()
    with pytest.raises(
        errors.DatasetError, match=r"camera 'observation.images.left_wrist_camera', episode 1\) is missing"
    ):
        lerobot.LeRobotDataset.open(root).check_videos()
    lerobot.LeRobotDataset.open(fixture_path("v3.0_video")).check_videos()
