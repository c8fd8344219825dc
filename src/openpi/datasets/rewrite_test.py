"""copy_with_columns on the LeRobot-written fixtures: new values land, the source never changes."""

import hashlib
import json
import os
import pathlib
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from openpi.datasets import lerobot
from openpi.datasets import reader_test
from openpi.shared import errors


def tree_digest(root: pathlib.Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def labels(n: int) -> dict[str, np.ndarray]:
    return {
        "adv_ind": np.asarray(["negative", "positive"])[np.arange(n) % 2],
        "value_label": -np.linspace(0, 1, n, dtype=np.float32),
        "advantage": np.linspace(-1, 1, n).astype(np.float32),
    }


@pytest.mark.parametrize("name", ["v3.0_video", "v2.1_video", "v3.0_image"])
def test_copy_replaces_and_adds_columns(tmp_path, name):
    src = reader_test.copy_fixture(name, tmp_path / "src")
    before = tree_digest(src)
    ds = lerobot.LeRobotDataset.open(src)
    new = labels(ds.num_frames)
    out = lerobot.copy_with_columns(src, tmp_path / "dst", new)
    assert tree_digest(src) == before, "the source dataset changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"], "staging left behind"

    assert out.column("adv_ind").tolist() == new["adv_ind"].tolist()
    np.testing.assert_array_equal(out.column("value_label"), new["value_label"])
    np.testing.assert_array_equal(out.column("advantage"), new["advantage"])
    for key in ("observation.state", "action", "intervention", "reward", "index", "timestamp", "task_index"):
        np.testing.assert_array_equal(out.column(key), ds.column(key), err_msg=key)
    assert out.features["advantage"] == {"dtype": "float32", "shape": [1], "names": None}
    assert list(out.features)[-6:] == ["advantage", "timestamp", "frame_index", "episode_index", "index", "task_index"]
    assert out[30]["advantage"].shape == (1,) and out[30]["adv_ind"] == "negative"
    for i in (0, 17, 47):  # cameras are untouched (bit-identical decode)
        for key in ds.camera_keys:
            np.testing.assert_array_equal(out[i][key], ds[i][key])

    for path in (tmp_path / "dst").rglob("*"):
        assert not path.is_symlink()
    for video in (tmp_path / "dst" / "videos").rglob("*.mp4"):
        twin = src / video.relative_to(tmp_path / "dst")
        assert os.stat(video).st_ino == os.stat(twin).st_ino, "videos should be hard links"
    data_file = next((tmp_path / "dst" / "data").rglob("*.parquet"))
    source_file = src / data_file.relative_to(tmp_path / "dst")
    assert pq.ParquetFile(data_file).metadata.num_row_groups == pq.ParquetFile(source_file).metadata.num_row_groups
    hf = json.loads(pq.read_schema(data_file).metadata[b"huggingface"])["info"]["features"]
    assert hf["advantage"] == {"dtype": "float32", "_type": "Value"} and list(hf)[-6] == "advantage"

    # Stats follow the new values, per episode and for the dataset.
    stats = out.stats
    np.testing.assert_allclose(stats["advantage"]["mean"], [new["advantage"].astype(np.float64).mean()], atol=1e-12)
    np.testing.assert_allclose(stats["value_label"]["min"], [-1.0])
    np.testing.assert_allclose(stats["action"]["mean"], ds.stats["action"]["mean"])
    if out.version == "v3.0":
        meta = next((tmp_path / "dst" / "meta" / "episodes").rglob("*.parquet"))
        theirs = pq.read_schema(src / meta.relative_to(tmp_path / "dst"))
        changed = ("stats/adv_ind/", "stats/value_label/", "stats/advantage/")
        for field in theirs:
            if not field.name.startswith(changed):
                assert pq.read_schema(meta).field(field.name).type == field.type, field.name
        episodes = pq.read_table(meta).to_pylist()
        for row, ep in zip(episodes, out.episodes, strict=True):
            want = new["advantage"][ep.from_index : ep.to_index].astype(np.float64)
            np.testing.assert_allclose(row["stats/advantage/mean"], [want.mean()], atol=1e-12)
            np.testing.assert_allclose(row["stats/advantage/q99"], [np.quantile(want, 0.99)], atol=1e-12)
            assert not any(k.startswith("stats/adv_ind/") for k in row)


def test_symlinked_v21_source_is_never_written_through(tmp_path):
    real = reader_test.copy_fixture("v2.1_video", tmp_path / "real")
    linked = tmp_path / "linked"
    for path in real.rglob("*"):
        if path.is_file():
            target = linked / path.relative_to(real)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    before = tree_digest(real)
    new = labels(48)
    out = lerobot.copy_with_columns(linked, tmp_path / "dst", new)
    assert out.column("adv_ind").tolist() == new["adv_ind"].tolist()
    assert not any(p.is_symlink() for p in (tmp_path / "dst").rglob("*"))
    assert tree_digest(real) == before
    # In place on the symlink tree: changed files become real files, their old targets stay intact.
    out = lerobot.copy_with_columns(linked, None, {"value_label": np.zeros(48, np.float32)}, in_place=True)
    np.testing.assert_array_equal(out.column("value_label"), np.zeros(48, np.float32))
    assert tree_digest(real) == before
    data = linked / "data" / "chunk-000" / "episode_000001.parquet"
    assert data.is_file() and not data.is_symlink()
    assert (linked / "videos" / "chunk-000" / "observation.images.head_camera" / "episode_000001.mp4").is_symlink()


def test_in_place_rewrites_each_changed_file(tmp_path):
    root = reader_test.copy_fixture("v3.0_video", tmp_path)
    video = root / "videos" / "observation.images.head_camera" / "chunk-000" / "file-000.mp4"
    video_inode = os.stat(video).st_ino
    out = lerobot.copy_with_columns(root, root, {"reward": np.ones(48, np.float32)}, in_place=True)
    np.testing.assert_array_equal(out.column("reward"), np.ones(48, np.float32))
    assert os.stat(video).st_ino == video_inode
    assert not list(root.rglob("*.tmp")) and sorted(p.name for p in tmp_path.iterdir()) == ["v3.0_video"]


def test_refusals(tmp_path):
    root = reader_test.copy_fixture("v3.0_image", tmp_path)
    before = tree_digest(root)
    with pytest.raises(errors.DatasetError, match="is the source dataset"):
        lerobot.copy_with_columns(root, root, labels(48))
    with pytest.raises(errors.DatasetError, match="nested"):
        lerobot.copy_with_columns(root, root / "sub", labels(48))
    with pytest.raises(errors.DatasetError, match=r"has 47 values but .* 48 frames"):
        lerobot.copy_with_columns(root, tmp_path / "d", {"advantage": np.zeros(47, np.float32)})
    with pytest.raises(errors.DatasetError, match="'episode_index' ties frames"):
        lerobot.copy_with_columns(root, tmp_path / "d", {"episode_index": np.zeros(48, np.int64)})
    with pytest.raises(errors.DatasetError, match="camera feature"):
        lerobot.copy_with_columns(root, tmp_path / "d", {"observation.images.head_camera": np.zeros(48)})
    with pytest.raises(errors.DatasetError, match="not in columns"):
        lerobot.copy_with_columns(root, tmp_path / "d", {}, features_update={"x": {"dtype": "float32", "shape": [1]}})
    with pytest.raises(errors.DatasetError, match=r"'intervention' is declared int64 but holds non-integer"):
        lerobot.copy_with_columns(root, tmp_path / "d", {"intervention": np.full(48, 0.5)})
    (tmp_path / "exists").mkdir()
    with pytest.raises(errors.DatasetError, match="already exists"):
        lerobot.copy_with_columns(root, tmp_path / "exists", labels(48))
    assert tree_digest(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "v3.0_image"]


def test_features_update_and_fallback_copy(tmp_path, monkeypatch):
    root = reader_test.copy_fixture("v3.0_video", tmp_path)
    calls = []

    def no_link(src, dst):
        calls.append(src)
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    spec = {"dtype": "float32", "shape": [2], "names": ["lo", "hi"]}
    values = np.stack([np.zeros(48), np.ones(48)], axis=1).astype(np.float32)
    out = lerobot.copy_with_columns(root, tmp_path / "dst", {"bounds": values}, features_update={"bounds": spec})
    assert out.features["bounds"] == spec and out.column("bounds").shape == (48, 2)
    assert len(calls) == 3  # one link attempt per video file, each fell back to a copy
    for video in (tmp_path / "dst" / "videos").rglob("*.mp4"):
        assert os.stat(video).st_nlink == 1
    shutil.rmtree(tmp_path / "dst")


def test_copy_of_v20_updates_its_stats_json(tmp_path):
    src = reader_test.make_v20(tmp_path / "src")
    out = lerobot.copy_with_columns(src, tmp_path / "dst", {"advantage": np.arange(48, dtype=np.float32)})
    assert out.version == "v2.0" and not (tmp_path / "dst" / "meta" / "episodes_stats.jsonl").exists()
    np.testing.assert_allclose(out.stats["advantage"]["mean"], [23.5])
    np.testing.assert_allclose(out.stats["advantage"]["max"], [47.0])
