"""Write -> read round trips (v2.1 / v3.0, video / image) and the writer's checks."""

import json
import pathlib

import numpy as np
import pyarrow.parquet as pq
import pytest

from openpi.datasets import lerobot
from openpi.datasets import reader_test
from openpi.datasets import video as video_lib
from openpi.shared import errors

H, W = 32, 48
FEATURES = {
    "observation.images.cam_high": {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"]},
    "observation.images.cam_wrist": {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"]},
    "observation.state": {"dtype": "float32", "shape": [4], "names": ["a", "b", "c", "d"]},
    "action": {"dtype": "float32", "shape": [4], "names": None},
    "intervention": {"dtype": "int64", "shape": [1], "names": None},
    "value_label": {"dtype": "float32", "shape": [1], "names": None},
    "adv_ind": {"dtype": "string", "shape": [1], "names": None},
}
TASKS = ("pick the cube", "open the drawer")


def make_episode(e: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """An episode whose images encode (episode, frame) as a bright block on a coloured background."""
    images = np.empty((length, H, W, 3), np.uint8)
    images[:] = np.asarray([40 + 50 * e, 120, 200 - 30 * e], np.uint8)
    for i in range(length):
        r, c = divmod(i % 6, 3)
        images[i, r * 16 : r * 16 + 16, c * 16 : c * 16 + 16] = 255
    return {
        "observation.images.cam_high": images,
        "observation.images.cam_wrist": images[:, ::-1].copy(),
        "observation.state": rng.normal(size=(length, 4)).astype(np.float32),
        "action": rng.normal(size=(length, 4)).astype(np.float32),
        "intervention": (rng.random(length) < 0.3).astype(np.int64),
        "value_label": -rng.random(length).astype(np.float32),
        "adv_ind": np.asarray(["positive", "negative", "none"])[rng.integers(0, 3, length)],
    }


def write_dataset(root, version="v3.0", use_videos=True, lengths=(5, 7, 4), **kwargs):
    rng = np.random.default_rng(len(lengths))
    episodes = [make_episode(e, n, rng) for e, n in enumerate(lengths)]
    writer = lerobot.LeRobotDatasetWriter.create(
        root, fps=15, features=FEATURES, robot_type="yam", version=version, use_videos=use_videos, **kwargs
    )
    task_lists = []
    for e, episode in enumerate(episodes):
        tasks = [TASKS[e % 2]] * len(episode["action"])
        if e == 2:
            tasks[-1] = "third task"
        task_lists.append(tasks)
        writer.add_episode(episode, tasks if e == 2 else tasks[0])
    return writer.finalize(), episodes, task_lists


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
@pytest.mark.parametrize("use_videos", [True, False])
def test_round_trip(tmp_path, version, use_videos):
    root = tmp_path / "ds"
    _, episodes, task_lists = write_dataset(root, version, use_videos)
    assert not list(tmp_path.glob(".ds.tmp-*")), "staging directory left behind"
    reopened = lerobot.LeRobotDataset.open(root)
    assert reopened.version == version and reopened.fps == 15 and reopened.robot_type == "yam"
    assert (reopened.num_frames, reopened.num_episodes) == (16, 3)
    assert reopened.tasks == {0: TASKS[0], 1: TASKS[1], 2: "third task"}
    assert [e.tasks for e in reopened.episodes] == [(TASKS[0],), (TASKS[1],), (TASKS[0], "third task")]
    assert [(e.from_index, e.to_index) for e in reopened.episodes] == [(0, 5), (5, 12), (12, 16)]
    camera_dtype = "video" if use_videos else "image"
    assert reopened.features["observation.images.cam_high"]["dtype"] == camera_dtype
    for key in ("observation.state", "action", "intervention", "value_label", "adv_ind"):
        want = np.concatenate([e[key] for e in episodes])
        got = reopened.column(key)
        assert got.dtype.kind == want.dtype.kind
        np.testing.assert_array_equal(got, want, err_msg=key)
    np.testing.assert_array_equal(reopened.column("index"), np.arange(16))
    np.testing.assert_array_equal(reopened.column("frame_index"), np.r_[0:5, 0:7, 0:4])
    np.testing.assert_array_equal(reopened.column("timestamp"), (np.r_[0:5, 0:7, 0:4] / 15).astype(np.float32))
    np.testing.assert_array_equal(reopened.column("task_index"), [0] * 5 + [1] * 7 + [0, 0, 0, 2])
    for i in range(len(reopened)):
        item = reopened[i]
        e, f = int(item["episode_index"][0]), int(item["frame_index"][0])
        assert item["task"] == task_lists[e][f]
        for key in ("observation.images.cam_high", "observation.images.cam_wrist"):
            source = episodes[e][key][f]
            if use_videos:
                assert np.abs(item[key].astype(np.int16) - source).mean() < 3.0, (i, key)
            else:
                np.testing.assert_array_equal(item[key], source)
    # Meta that LeRobot itself reads.
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 3 and info["total_frames"] == 16 and info["total_tasks"] == 3
    assert info["features"]["timestamp"] == {"dtype": "float32", "shape": [1], "names": None}
    if use_videos:
        assert info["features"]["observation.images.cam_high"]["info"]["video.codec"] == "av1"
    stats = reopened.stats
    all_actions = np.concatenate([e["action"] for e in episodes]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["mean"], all_actions.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats["action"]["std"], all_actions.std(0), rtol=1e-12)
    assert stats["observation.images.cam_high"]["mean"].shape == (3, 1, 1)
    assert "adv_ind" not in stats
    data_file = next((root / "data").rglob("*.parquet"))
    hf = json.loads(pq.read_schema(data_file).metadata[b"huggingface"])
    assert hf["info"]["features"]["action"]["_type"] == ("List" if version == "v3.0" else "Sequence")


def test_v30_rolls_over_files_and_reads_across_them(tmp_path):
    ds, episodes, _ = write_dataset(
        tmp_path / "ds", lengths=(6, 6, 6, 6), data_files_size_in_mb=1e-4, video_files_size_in_mb=1e-4
    )
    data_files = sorted(p.name for p in (tmp_path / "ds" / "data" / "chunk-000").iterdir())
    assert data_files == [f"file-{i:03d}.parquet" for i in range(4)]
    video_files = sorted((tmp_path / "ds" / "videos" / "observation.images.cam_high" / "chunk-000").iterdir())
    assert len(video_files) == 4
    assert {ep.videos["observation.images.cam_high"].from_timestamp for ep in ds.episodes} == {0.0}
    for i in (0, 7, 13, 23, 2):
        item = ds[i]
        e, f = divmod(i, 6)
        assert (
            np.abs(
                item["observation.images.cam_high"].astype(np.int16) - episodes[e]["observation.images.cam_high"][f]
            ).mean()
            < 3
        )
        np.testing.assert_array_equal(item["action"], episodes[e]["action"][f])


def test_v30_concatenates_episodes_in_one_video(tmp_path):
    ds, _, _ = write_dataset(tmp_path / "ds", lengths=(5, 7, 4))
    segments = [ep.videos["observation.images.cam_wrist"] for ep in ds.episodes]
    assert [(s.from_timestamp, s.to_timestamp) for s in segments] == [
        (0, 5 / 15),
        (5 / 15, 12 / 15),
        (12 / 15, 16 / 15),
    ]
    assert len({s.path for s in segments}) == 1
    assert video_lib.video_info(ds.root / segments[0].path)["frames"] == 16


def test_h264_encoding(tmp_path):
    encoding = video_lib.VideoEncoding(codec="libx264", crf=18)
    ds, episodes, _ = write_dataset(tmp_path / "ds", lengths=(4, 3), video_encoding=encoding)
    assert ds.features["observation.images.cam_high"]["info"]["video.codec"] == "h264"
    assert len({ep.videos["observation.images.cam_high"].path for ep in ds.episodes}) == 1  # concatenated
    second = ds[6]["observation.images.cam_high"].astype(np.int16)
    assert np.abs(second - episodes[1]["observation.images.cam_high"][2]).mean() < 3
    assert (
        np.abs(
            ds[3]["observation.images.cam_high"].astype(np.int16) - episodes[0]["observation.images.cam_high"][3]
        ).mean()
        < 3
    )


def test_bad_episodes_are_refused_with_the_reason(tmp_path):
    rng = np.random.default_rng(0)
    writer = lerobot.LeRobotDatasetWriter.create(tmp_path / "ds", fps=10, features=FEATURES)
    good = make_episode(0, 4, rng)
    with pytest.raises(errors.DatasetError, match=r"lacks the features \['action'\]"):
        writer.add_episode({k: v for k, v in good.items() if k != "action"}, "t")
    with pytest.raises(
        errors.DatasetError, match=r"camera 'observation.images.cam_high' must be uint8 \[T, 32, 48, 3\]"
    ):
        writer.add_episode({**good, "observation.images.cam_high": good["observation.images.cam_high"][:, :16]}, "t")
    with pytest.raises(errors.DatasetError, match=r"'action' has 3 frames but other features have 4"):
        writer.add_episode({**good, "action": good["action"][:3]}, "t")
    with pytest.raises(errors.DatasetError, match=r"'observation.state' has shape \[4, 5\]"):
        writer.add_episode({**good, "observation.state": np.zeros((4, 5), np.float32)}, "t")
    with pytest.raises(errors.DatasetError, match="the writer computes them"):
        writer.add_episode({**good, "timestamp": np.zeros(4, np.float32)}, "t")
    with pytest.raises(errors.DatasetError, match="2 tasks for 4 frames"):
        writer.add_episode(good, ["a", "b"])
    with pytest.raises(errors.DatasetError, match="non-integer"):
        writer.add_episode({**good, "intervention": np.full(4, 0.5)}, "t")
    # Nothing was added by the failed calls; a good episode still works.
    assert writer.add_episode(good, "t") == 0
    assert writer.finalize().num_frames == 4


_PLAIN = {"observation.state": {"dtype": "float32", "shape": [2]}, "adv_ind": {"dtype": "string", "shape": [1]}}


@pytest.mark.parametrize(
    ("cell", "shown"), [(None, "None"), (float("nan"), "nan"), (b"positive", "b'positive'"), (1, "1")]
)
def test_non_text_in_a_string_column_is_refused_not_stringified(tmp_path, cell, shown):
    """Issue 29.6: these used to be written as the strings "None", "nan", "b'positive'" and "1"."""
    writer = lerobot.LeRobotDatasetWriter.create(tmp_path / "ds", fps=10, features=_PLAIN, use_videos=False)
    frames = {"observation.state": np.zeros((3, 2), np.float32), "adv_ind": ["positive", cell, "none"]}
    with pytest.raises(errors.DatasetError) as info:
        writer.add_episode(frames, "t")
    assert str(info.value).startswith(f"Episode 0, frame 1: string feature 'adv_ind' holds {shown} (")
    assert "pass a str for every frame" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("tasks", [None, ["a", None, "a"], ["a", "a", b"a"], 3])
def test_a_task_that_is_not_text_is_refused(tmp_path, tasks):
    """Issue 29.6: a per-frame task None used to become the task "None"; an episode task None crashed (TypeError)."""
    writer = lerobot.LeRobotDatasetWriter.create(tmp_path / "ds", fps=10, features=_PLAIN, use_videos=False)
    frames = {"observation.state": np.zeros((3, 2), np.float32), "adv_ind": ["none"] * 3}
    with pytest.raises(errors.DatasetError, match=r"^Episode 0(, frame \d)?: the task(s)? .*; pass "):
        writer.add_episode(frames, tasks)
    assert writer.add_episode(frames, np.asarray(["a", "b", "a"])) == 0  # numpy strings are text
    assert writer.finalize().tasks == {0: "a", 1: "b"}


def test_existing_root_abort_and_empty(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, lengths=(3,))
    with pytest.raises(errors.DatasetError, match="already exists"):
        lerobot.LeRobotDatasetWriter.create(root, fps=10, features=FEATURES)
    # An aborted writer (exception inside `with`) leaves the old dataset and no staging dir.
    with (
        pytest.raises(RuntimeError),
        lerobot.LeRobotDatasetWriter.create(root, fps=10, features=FEATURES, overwrite=True) as writer,
    ):
        writer.add_episode(make_episode(0, 2, np.random.default_rng(1)), "x")
        raise RuntimeError("killed")
    assert lerobot.LeRobotDataset.open(root).num_frames == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    writer = lerobot.LeRobotDatasetWriter.create(tmp_path / "empty", fps=10, features=FEATURES)
    with pytest.raises(errors.DatasetError, match="No episode was added"):
        writer.finalize()
    assert not (tmp_path / "empty").exists()
    # overwrite=True replaces the dataset atomically.
    ds, _, _ = write_dataset(root, lengths=(2, 2), overwrite=True)
    assert ds.num_frames == 4 and [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_bad_feature_specs(tmp_path):
    with pytest.raises(errors.DatasetError, match="'dtype' and 'shape'"):
        lerobot.LeRobotDatasetWriter.create(tmp_path / "a", fps=10, features={"x": {"dtype": "float32"}})
    with pytest.raises(errors.DatasetError, match=r"shape \[2, 3\]; only shape \[1\] and 1-D"):
        lerobot.LeRobotDatasetWriter.create(
            tmp_path / "b", fps=10, features={"x": {"dtype": "float32", "shape": [2, 3]}}
        )
    with pytest.raises(errors.DatasetError, match=r"needs shape \[height, width, 3\]"):
        lerobot.LeRobotDatasetWriter.create(
            tmp_path / "c", fps=10, features={"cam": {"dtype": "video", "shape": [8, 8]}}
        )
    assert not any(pathlib.Path(tmp_path).iterdir())


@pytest.mark.parametrize("name", ["v3.0_video", "v2.1_video", "v3.0_image"])
def test_rewriting_a_fixture_reproduces_lerobots_layout(tmp_path, name):
    """Our writer, fed the fixture's own frames, writes the files, info.json and schemas LeRobot wrote."""
    fixture = lerobot.LeRobotDataset.open(reader_test.fixture_path(name))
    with np.load(reader_test.fixture_path("") / "source_frames.npz") as npz:
        images = dict(npz)
    writer = lerobot.LeRobotDatasetWriter.create(
        tmp_path / name,
        fps=fixture.fps,
        features=fixture.features,
        robot_type=fixture.robot_type,
        version=fixture.version,
        use_videos=bool(fixture.video_keys),
    )
    keys = [k for k in fixture.features if k not in lerobot.DEFAULT_FEATURES and k not in fixture.camera_keys]
    for ep in fixture.episodes:
        frames = {k: fixture.column(k)[ep.from_index : ep.to_index] for k in keys}
        frames.update({k: images[f"episode_{ep.episode_index:03d}/{k}"] for k in fixture.camera_keys})
        writer.add_episode(frames, ep.tasks[0])
    ours = writer.finalize()

    def files(root):
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    assert files(ours.root) == files(fixture.root)
    assert json.loads((ours.root / "meta/info.json").read_text()) == fixture.info
    for rel in files(fixture.root):
        if rel.endswith(".parquet"):
            theirs, mine = pq.read_schema(fixture.root / rel), pq.read_schema(ours.root / rel)
            assert set(mine.names) == set(theirs.names), rel
            for field in theirs:
                assert mine.field(field.name).type == field.type, (rel, field.name)
            if rel.startswith("data/"):
                hf_theirs = json.loads(theirs.metadata[b"huggingface"])["info"]["features"]
                assert json.loads(mine.metadata[b"huggingface"])["info"]["features"] == hf_theirs
        elif rel.endswith(".jsonl") and "stats" not in rel:
            assert (ours.root / rel).read_text() == (fixture.root / rel).read_text(), rel
    for key in fixture.features:
        if key in ours.stats:
            # lerobot 0.4.4 stores per-episode camera std over frame means (0 here), so its pooled camera std
            # differs from our per-pixel one; v2.1 (lerobot 0.3.3) used per-pixel stats like ours.
            per_pixel_std = key not in fixture.camera_keys or fixture.version == "v2.1"
            stats = ("min", "max", "mean", "count") + (("std",) if per_pixel_std else ())
            for stat in stats:
                np.testing.assert_allclose(ours.stats[key][stat], fixture.stats[key][stat], rtol=1e-6, atol=1e-9)


def test_failure_while_writing_aborts_the_writer(tmp_path, monkeypatch):
    writer = lerobot.LeRobotDatasetWriter.create(tmp_path / "ds", fps=10, features=FEATURES)
    writer.add_episode(make_episode(0, 3, np.random.default_rng(0)), "t")

    def broken(self, frames):
        raise OSError("disk full")

    monkeypatch.setattr(video_lib.VideoEncoder, "add", broken)
    with pytest.raises(OSError, match="disk full"):
        writer.add_episode(make_episode(1, 3, np.random.default_rng(1)), "t")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(errors.DatasetError, match="already finalized or aborted"):
        writer.finalize()
