"""Merging LeRobot datasets: renumbered episodes, unified tasks, untouched videos, clear refusals."""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from openpi.datasets import lerobot
from openpi.datasets import merge
from openpi.datasets import reader_test
from openpi.shared import errors


def tiny(root, tasks, *, fps=5, state_dim=3, version="v3.0", start=0.0):
    features = {
        "observation.state": {"dtype": "float32", "shape": [state_dim], "names": None},
        "flag": {"dtype": "int64", "shape": [1], "names": None},
        "cam": {"dtype": "image", "shape": [8, 8, 3], "names": None},
    }
    writer = lerobot.LeRobotDatasetWriter.create(root, fps=fps, features=features, version=version, use_videos=False)
    for e, task in enumerate(tasks):
        n = 3 + e
        writer.add_episode(
            {
                "observation.state": (start + 10 * e + np.arange(n * state_dim))
                .reshape(n, state_dim)
                .astype(np.float32),
                "flag": np.arange(n) % 2,
                "cam": np.full((n, 8, 8, 3), 20 * e + int(start), np.uint8),
            },
            task,
        )
    return writer.finalize()


def test_merge_video_fixtures_v30_and_v21(tmp_path):
    a = lerobot.LeRobotDataset.open(reader_test.fixture_path("v3.0_video"))
    b = lerobot.LeRobotDataset.open(reader_test.fixture_path("v2.1_video"))
    out = merge.merge_datasets([a, b], tmp_path / "merged", allow_unrecorded_label_scale=True)
    assert (out.version, out.num_episodes, out.num_frames, out.fps, out.robot_type) == ("v3.0", 6, 96, 10, "yam")
    assert out.tasks == a.tasks
    assert [e.episode_index for e in out.episodes] == list(range(6))
    assert [e.length for e in out.episodes] == [12, 16, 20] * 2
    np.testing.assert_array_equal(out.column("index"), np.arange(96))
    np.testing.assert_array_equal(out.column("episode_index"), np.repeat(np.arange(6), [12, 16, 20] * 2))
    for key in ("observation.state", "action", "adv_ind", "task_index", "timestamp", "frame_index"):
        np.testing.assert_array_equal(out.column(key), np.concatenate([a.column(key), b.column(key)]), err_msg=key)
    for i in (0, 13, 47, 48, 70, 95):
        source, j = (a, i) if i < 48 else (b, i - 48)
        got, want = out[i], source[j]
        assert got["task"] == want["task"]
        for key in a.video_keys:
            np.testing.assert_array_equal(got[key], want[key])
    # Videos are hard links of the sources: one v3.0 file, then one file per v2.1 episode.
    head = tmp_path / "merged" / "videos" / "observation.images.head_camera" / "chunk-000"
    assert sorted(p.name for p in head.iterdir()) == [f"file-{i:03d}.mp4" for i in range(4)]
    assert os.stat(head / "file-000.mp4").st_ino == os.stat(a.root / a.episodes[0].videos[a.video_keys[0]].path).st_ino
    episodes_meta = pq.read_table(next((tmp_path / "merged" / "meta" / "episodes").rglob("*.parquet")))
    stats_columns = [c for c in episodes_meta.column_names if c.startswith("stats/")]
    assert "stats/action/mean" in stats_columns and "stats/action/q01" not in stats_columns  # v2.1 has none
    assert all(episodes_meta.column(c).null_count == 0 for c in episodes_meta.column_names)
    stats = out.stats
    want = np.concatenate([a.column("action"), b.column("action")]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["mean"], want.mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats["action"]["std"], want.std(0), rtol=1e-6)


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_tasks_are_unified_by_text(tmp_path, version):
    a = tiny(tmp_path / "a", ["open", "close"], version="v2.1")
    b = tiny(tmp_path / "b", ["close", "wipe", "open"], start=100.0)
    out = merge.merge_datasets([a, b], tmp_path / "m", version=version)
    assert out.version == version
    assert out.tasks == {0: "open", 1: "close", 2: "wipe"}
    assert [e.tasks for e in out.episodes] == [("open",), ("close",), ("close",), ("wipe",), ("open",)]
    np.testing.assert_array_equal(out.column("task_index"), np.repeat([0, 1, 1, 2, 0], [3, 4, 3, 4, 5]))
    for i in range(out.num_frames):
        source, j = (a, i) if i < a.num_frames else (b, i - a.num_frames)
        got, want = out[i], source[j]
        assert got["task"] == want["task"]
        np.testing.assert_array_equal(got["cam"], want["cam"])
        np.testing.assert_array_equal(got["observation.state"], want["observation.state"])
    assert out.info["total_tasks"] == 3 and out.info["total_episodes"] == 5


def test_refusals_name_the_problem(tmp_path):
    a = tiny(tmp_path / "a", ["x"])
    with pytest.raises(
        errors.DatasetError, match=r"feature 'observation.state' is float32 \[3\] in .*a but float32 \[4\] in .*b;"
    ):
        merge.merge_datasets([a, tiny(tmp_path / "b", ["x"], state_dim=4)], tmp_path / "m")
    with pytest.raises(errors.DatasetError, match="fps 5 != 7"):
        merge.merge_datasets([a, tiny(tmp_path / "c", ["x"], fps=7)], tmp_path / "m")
    fixture = lerobot.LeRobotDataset.open(reader_test.fixture_path("v3.0_video"))
    with pytest.raises(errors.DatasetError, match="robot_type 'yam' != None"):
        merge.merge_datasets([fixture, tiny(tmp_path / "d", ["x"], fps=10)], tmp_path / "m")
    extra = lerobot.copy_with_columns(fixture, tmp_path / "extra", {"extra": np.zeros(48, np.float32)})
    with pytest.raises(errors.DatasetError, match=r"feature 'extra' is missing from .*v3.0_video; add it"):
        merge.merge_datasets([fixture, extra], tmp_path / "m")
    with pytest.raises(errors.DatasetError, match=r"only be merged into v3\.0"):
        merge.merge_datasets([fixture], tmp_path / "m", version="v2.1")
    (tmp_path / "exists").mkdir()
    with pytest.raises(errors.DatasetError, match="already exists"):
        merge.merge_datasets([a], tmp_path / "exists")
    with pytest.raises(errors.DatasetError, match="must not be"):
        merge.merge_datasets([a], tmp_path / "a", overwrite=True)
    assert not (tmp_path / "m").exists()
    assert lerobot.LeRobotDataset.open(tmp_path / "a").num_frames == 3


def test_merge_v20_with_v21_into_v21(tmp_path):
    v20 = lerobot.LeRobotDataset.open(reader_test.make_v20(tmp_path / "v20"))
    v21 = lerobot.LeRobotDataset.open(reader_test.fixture_path("v2.1_video"))
    out = merge.merge_datasets([v20, v21], tmp_path / "m", version="v2.1", allow_unrecorded_label_scale=True)
    assert out.version == "v2.1" and out.num_episodes == 6
    np.testing.assert_array_equal(out[60]["observation.images.head_camera"], v21[12]["observation.images.head_camera"])
    want = np.concatenate([v20.column("action"), v21.column("action")]).astype(np.float64)
    np.testing.assert_allclose(out.stats["action"]["mean"], want.mean(0), rtol=1e-9)
    np.testing.assert_allclose(out.stats["action"]["std"], want.std(0), rtol=1e-6)


def _cams(root, *, use_videos=True, codec="libsvtav1", shade=0):
    """Two 3-frame episodes of a 16x16 camera (flat colours survive lossy codecs) plus a state column."""
    from openpi.datasets import video

    features = {
        "observation.state": {"dtype": "float32", "shape": [2], "names": None},
        "cam": {"dtype": "video" if use_videos else "image", "shape": [16, 16, 3], "names": None},
    }
    writer = lerobot.LeRobotDatasetWriter.create(
        root, fps=5, features=features, use_videos=use_videos, video_encoding=video.VideoEncoding(codec=codec)
    )
    for e in range(2):
        writer.add_episode(
            {
                "observation.state": np.full((3, 2), e, np.float32),
                "cam": np.full((3, 16, 16, 3), 40 * e + shade + 30, np.uint8),
            },
            "t",
        )
    return writer.finalize()


def _stream_codecs(root):
    import av

    out = set()
    for path in sorted(root.glob("videos/**/*.mp4")):
        with av.open(str(path)) as container:
            out.add(container.streams.video[0].codec_context.name)
    return out


def test_codecs_and_camera_storage_must_match_or_be_converted(tmp_path):
    """Issue 14.10: an H.264 + AV1 merge must not record AV1 for every file; video + image names them in order,
    and `convert_cameras` decodes to image mode or encodes to the first video source's codec on request."""
    av1 = _cams(tmp_path / "av1")
    h264 = _cams(tmp_path / "h264", codec="libx264", shade=100)
    images = _cams(tmp_path / "images", use_videos=False, shade=50)

    with pytest.raises(errors.DatasetError, match=r"'cam' is encoded as h264 in .*h264 but as av1 in .*av1"):
        merge.merge_datasets([av1, h264], tmp_path / "m")
    with pytest.raises(errors.DatasetError) as info:
        merge.merge_datasets([av1, images], tmp_path / "m")
    message = str(info.value)
    assert message.startswith(f"Cannot merge {av1.root} and {images.root}: feature 'cam' is video")
    assert f"image [16, 16, 3] in {images.root}" in message and "convert_cameras" in message
    assert not (tmp_path / "m").exists()

    as_video = merge.merge_datasets([av1, h264, images], tmp_path / "video", convert_cameras="video")
    assert as_video.features["cam"]["dtype"] == "video" and as_video.features["cam"]["info"]["video.codec"] == "av1"
    codecs = _stream_codecs(as_video.root)
    assert codecs and not any("264" in c for c in codecs), codecs  # every file really is AV1 now
    assert as_video.num_episodes == 6
    shades = [int(as_video.get(i)["cam"].mean().round()) for i in range(0, as_video.num_frames, 3)]
    assert np.allclose(shades, [30, 70, 130, 170, 80, 120], atol=3)

    as_image = merge.merge_datasets([av1, h264, images], tmp_path / "image", convert_cameras="image")
    assert as_image.features["cam"]["dtype"] == "image" and not list(as_image.root.glob("videos/**/*.mp4"))
    for i in range(as_image.num_frames):
        source = [av1, h264, images][i // 6]
        np.testing.assert_array_equal(as_image.get(i)["cam"], source.get(i % 6)["cam"])
        np.testing.assert_array_equal(as_image.get(i)["observation.state"], source.get(i % 6)["observation.state"])
