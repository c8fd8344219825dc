"""add_recap_columns on tiny datasets written to disk by our LeRobot writer (v2.1 and v3.0, video and image)."""

import dataclasses
import hashlib
import json
import os
import pathlib

import numpy as np
import pytest

from openpi.datasets import convert
from openpi.datasets import lerobot
from openpi.datasets import reader_test
from openpi.datasets import recap_columns
from openpi.datasets import synthetic
from openpi.recap import labels
from openpi.recap import provenance
from openpi.shared import errors

CONFIG = synthetic.SyntheticConfig(num_episodes=8, image_size=16, max_length=16)
RECAP = tuple(recap_columns.RECAP_FEATURES)


def tree_digest(root: pathlib.Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def rollouts(
    root: pathlib.Path,
    *,
    version: str = "v3.0",
    use_videos: bool = False,
    intervention: str | None = "intervention",
    success_column: str | None = None,
    outcome_column: str | None = None,
    keep: tuple[str, ...] = (),
) -> list[synthetic.SyntheticEpisode]:
    """Writes the synthetic rollouts as a robot would record them: no RECAP labels, only the raw facts.

    `intervention` names the human-flag column (None drops it); `success_column` adds a bool column that is
    True on the last frame of each successful episode; `outcome_column` adds a string column, "running" until the
    last frame, then "Success" or "failure"; `keep` keeps some RECAP columns as they are.
    """
    episodes = synthetic.generate(CONFIG)
    drop = [c for c in RECAP if c not in keep]
    features = {k: v for k, v in synthetic.features(CONFIG.image_size, use_videos=use_videos).items() if k not in drop}
    if intervention is not None:
        features[intervention] = dict(recap_columns.RECAP_FEATURES["intervention"])
    if success_column is not None:
        features[success_column] = {"dtype": "bool", "shape": [1], "names": None}
    if outcome_column is not None:
        features[outcome_column] = {"dtype": "string", "shape": [1], "names": None}
    writer = lerobot.LeRobotDatasetWriter.create(
        root, fps=CONFIG.fps, features=features, robot_type="yam", version=version, use_videos=use_videos
    )
    with writer:
        for ep in episodes:
            frames = {k: v for k, v in ep.frames.items() if k not in drop}
            if intervention is not None:
                frames[intervention] = ep.frames["intervention"]
            if success_column is not None:
                frames[success_column] = (
                    np.arange(ep.length) == ep.length - 1 if ep.success else np.zeros(ep.length, bool)
                )
            if outcome_column is not None:
                frames[outcome_column] = ["running"] * (ep.length - 1) + ["Success" if ep.success else "failure"]
            writer.add_episode(frames, ep.task)
        writer.finalize()
    return episodes


def truth(episodes, config: labels.LabelConfig = labels.LabelConfig()) -> dict[str, np.ndarray]:
    """The labels computed straight from the generator's facts (not from what is on disk)."""
    per_episode = labels.label_episodes(
        [labels.Episode(task=ep.task, success=ep.success, intervention=ep.frames["intervention"]) for ep in episodes],
        config,
    )
    return {k: np.concatenate([cols[k] for cols in per_episode]) for k in labels.COLUMNS}


def write_outcomes(path: pathlib.Path, episodes, *, skip: int | None = None) -> pathlib.Path:
    outcomes = {str(i): ep.success for i, ep in enumerate(episodes) if i != skip}
    path.write_text(json.dumps(outcomes))
    return path


def assert_columns(out: lerobot.LeRobotDataset, expected: dict[str, np.ndarray]) -> None:
    for name in RECAP:
        assert out.features[name] == recap_columns.RECAP_FEATURES[name], name
        if name == "adv_ind":
            assert out.column(name).tolist() == expected[name].tolist()
        else:
            np.testing.assert_array_equal(out.column(name), expected[name], err_msg=name)
    recap_columns.validate_recap_columns(out)


@pytest.mark.parametrize(
    ("version", "use_videos", "mode"),
    [("v3.0", True, "paper"), ("v2.1", True, "per_episode"), ("v3.0", False, "per_episode"), ("v2.1", False, "paper")],
)
def test_converts_both_versions_and_modes(tmp_path, version, use_videos, mode):
    episodes = rollouts(tmp_path / "src", version=version, use_videos=use_videos)
    before = tree_digest(tmp_path / "src")
    config = convert.ConvertConfig(
        success_file=write_outcomes(tmp_path / "outcomes.json", episodes), labels=labels.LabelConfig(mode=mode)
    )
    result = convert.add_recap_columns(tmp_path / "src", tmp_path / "dst", config)
    assert tree_digest(tmp_path / "src") == before, "the source dataset changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "outcomes.json", "src"], "staging left behind"

    out = result.dataset
    assert out.version == version and out.root == (tmp_path / "dst").resolve()
    expected = truth(episodes, labels.LabelConfig(mode=mode))
    assert_columns(out, expected)
    if mode == "paper":  # the generator labels its own dataset in paper mode: same numbers from disk and from memory
        for name in ("reward_label", "value_label"):
            np.testing.assert_array_equal(out.column(name), np.concatenate([ep.frames[name] for ep in episodes]))
    src = lerobot.LeRobotDataset.open(tmp_path / "src")
    for key in ("observation.state", "action", "index", "timestamp", "task_index", "episode_index"):
        np.testing.assert_array_equal(out.column(key), src.column(key), err_msg=key)
    for i in (0, 20, out.num_frames - 1):
        for key in src.camera_keys:
            np.testing.assert_array_equal(out[i][key], src[i][key])
    for path in (tmp_path / "dst").rglob("*"):
        assert not path.is_symlink()
    videos = list((tmp_path / "dst" / "videos").rglob("*.mp4"))
    assert bool(videos) == use_videos
    for video in videos:
        twin = tmp_path / "src" / video.relative_to(tmp_path / "dst")
        assert os.stat(video).st_ino == os.stat(twin).st_ino, "videos should be hard links"
    np.testing.assert_allclose(out.stats["value_label"]["min"], [expected["value_label"].min()], atol=1e-6)

    summary = result.summary
    assert summary.mode == mode and summary.episodes == 8 and summary.frames == out.num_frames
    assert summary.success_rate == pytest.approx(np.mean([ep.success for ep in episodes]))
    for task in summary.tasks:
        mine = [ep for ep in episodes if ep.task == task.task]
        assert task.episodes == len(mine) and task.successes == sum(ep.success for ep in mine)
        assert task.max_length == max(ep.length for ep in mine)
        human = sum(int(ep.frames["intervention"].sum()) for ep in mine)
        assert task.human_fraction == pytest.approx(human / sum(ep.length for ep in mine))
    text = convert.format_summary(summary)
    assert "pick up the red cube" in text and f"{summary.success_rate:.1%}" in text


def test_success_from_column_csv_and_flags(tmp_path):
    episodes = rollouts(
        tmp_path / "src", intervention="is_human", success_column="next.success", outcome_column="outcome"
    )
    success = np.asarray([ep.success for ep in episodes])
    assert 0 < success.sum() < len(success), "the test needs both outcomes"

    # Auto-detected success column, intervention flags under another name; `intervention` is added.
    config = convert.ConvertConfig(intervention_column="is_human")
    result = convert.add_recap_columns(tmp_path / "src", tmp_path / "a", config)
    assert_columns(result.dataset, truth(episodes))
    assert result.summary.success_source == "column 'next.success' (last frame > 0)"
    np.testing.assert_array_equal(result.dataset.column("is_human"), result.dataset.column("intervention"))

    # The same outcomes as words in a string column.
    config = convert.ConvertConfig(intervention_column="is_human", success_column="outcome")
    result = convert.add_recap_columns(tmp_path / "src", tmp_path / "w", config)
    assert_columns(result.dataset, truth(episodes))
    assert result.summary.success_source == "column 'outcome' (last frame)"

    # A CSV with words and surrounding spaces gives the same outcomes.
    csv_path = tmp_path / "outcomes.csv"
    rows = [f" {i} , {'success' if ep.success else 'failure'} " for i, ep in enumerate(episodes)]
    csv_path.write_text("episode_index, success\n" + "\n".join(rows) + "\n")
    config = convert.ConvertConfig(intervention_column="is_human", success_file=csv_path)
    assert_columns(convert.add_recap_columns(tmp_path / "src", tmp_path / "b", config).dataset, truth(episodes))

    # Demonstrations: every frame human and positive, every episode a success.
    config = convert.ConvertConfig(demos=True, all_success=True)
    out = convert.add_recap_columns(tmp_path / "src", tmp_path / "c", config).dataset
    assert (out.column("intervention") == 1).all() and set(out.column("adv_ind").tolist()) == {"positive"}
    assert out.column("reward").sum() == len(episodes)
    demo_truth = labels.label_episodes([labels.Episode(ep.task, True, length=ep.length) for ep in episodes])
    np.testing.assert_array_equal(out.column("value_label"), np.concatenate([c["value_label"] for c in demo_truth]))


def test_c_fail_reaches_the_labels(tmp_path):
    episodes = rollouts(tmp_path / "src")
    config = convert.ConvertConfig(
        success_file=write_outcomes(tmp_path / "o.json", episodes), labels=labels.LabelConfig(c_fail=4.0)
    )
    out = convert.add_recap_columns(tmp_path / "src", tmp_path / "dst", config).dataset
    expected = truth(episodes, labels.LabelConfig(c_fail=4.0))
    assert_columns(out, expected)
    assert not np.array_equal(expected["value_label"], truth(episodes)["value_label"]), "c_fail had no effect"


def test_existing_columns_refused_unless_overwrite(tmp_path):
    synthetic.write_dataset(tmp_path / "src", CONFIG, use_videos=False)
    episodes = synthetic.generate(CONFIG)
    config = convert.ConvertConfig(success_column="reward", labels=labels.LabelConfig(mode="per_episode"))
    with pytest.raises(errors.DatasetError, match=r"already has RECAP columns .*reward_label, value_label, adv_ind"):
        convert.add_recap_columns(tmp_path / "src", tmp_path / "dst", config)
    assert not (tmp_path / "dst").exists()

    config = convert.ConvertConfig(
        success_column="reward", labels=labels.LabelConfig(mode="per_episode"), overwrite_columns=True
    )
    result = convert.add_recap_columns(tmp_path / "src", tmp_path / "dst", config)
    assert_columns(result.dataset, truth(episodes, labels.LabelConfig(mode="per_episode")))
    assert result.summary.replaced_columns == ("reward_label", "value_label", "adv_ind")
    assert "recomputed existing columns" in convert.format_summary(result.summary)

    # --demos would turn autonomous frames into human ones: that changes `intervention`, so it is refused too.
    with pytest.raises(errors.DatasetError, match=r"would replace \(.*intervention, reward\)"):
        convert.add_recap_columns(tmp_path / "dst", tmp_path / "x", convert.ConvertConfig(demos=True, all_success=True))


def test_legacy_value_lable_is_rewritten(tmp_path):
    episodes = synthetic.generate(CONFIG)
    features = synthetic.features(CONFIG.image_size, use_videos=False)
    features["value_lable"] = features.pop("value_label")
    writer = lerobot.LeRobotDatasetWriter.create(tmp_path / "src", fps=CONFIG.fps, features=features, use_videos=False)
    with writer:
        for ep in episodes:
            frames = dict(ep.frames)
            frames["value_lable"] = frames.pop("value_label") * 0.5
            writer.add_episode(frames, ep.task)
        writer.finalize()
    config = convert.ConvertConfig(success_column="reward", overwrite_columns=True)
    out = convert.add_recap_columns(tmp_path / "src", tmp_path / "dst", config).dataset
    expected = truth(episodes)["value_label"]
    np.testing.assert_array_equal(out.column("value_label"), expected)
    np.testing.assert_array_equal(out.column("value_lable"), expected)


def test_errors_name_the_problem(tmp_path):
    episodes = rollouts(tmp_path / "src", intervention=None, success_column="success")
    before = tree_digest(tmp_path / "src")
    dst = tmp_path / "dst"

    def fails(config, pattern, exc=errors.DatasetError, target=dst):
        with pytest.raises(exc, match=pattern) as info:
            convert.add_recap_columns(tmp_path / "src", target, config)
        assert isinstance(info.value, errors.UserError) and "\n" not in str(info.value)
        assert not dst.exists()

    fails(convert.ConvertConfig(), r"no intervention column 'intervention' .*--demos")
    fails(convert.ConvertConfig(intervention_column="is_human"), r"no intervention column 'is_human'")

    missing = write_outcomes(tmp_path / "o.json", episodes, skip=5)
    fails(convert.ConvertConfig(demos=True, success_file=missing), r"no outcome for episode 5 ")
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({**{str(i): True for i in range(8)}, "12": False}))
    fails(convert.ConvertConfig(demos=True, success_file=extra), r"episodes \[12\] that .* does not have")
    word = tmp_path / "word.json"
    word.write_text(json.dumps([{"episode_index": i, "success": "maybe" if i == 3 else True} for i in range(8)]))
    fails(convert.ConvertConfig(demos=True, success_file=word), r"episode 3 the outcome 'maybe'")
    fails(convert.ConvertConfig(demos=True, success_file=tmp_path / "nope.json"), r"does not exist")
    fails(convert.ConvertConfig(demos=True, success_column="next.success"), r"no success column 'next.success'")

    with pytest.raises(errors.ConfigError, match="given twice"):
        convert.ConvertConfig(all_success=True, success_column="success")

    dst.mkdir()
    with pytest.raises(errors.DatasetError, match=r"Output directory .*dst already exists; .*--overwrite"):
        convert.add_recap_columns(tmp_path / "src", dst, convert.ConvertConfig(demos=True))
    assert list(dst.iterdir()) == []
    result = convert.add_recap_columns(tmp_path / "src", dst, convert.ConvertConfig(demos=True), overwrite=True)
    assert result.dataset.num_episodes == 8 and result.summary.success_source == "column 'success' (last frame > 0)"
    with pytest.raises(errors.DatasetError, match="nested"):
        convert.add_recap_columns(tmp_path / "src", tmp_path / "src" / "out", convert.ConvertConfig(demos=True))
    assert tree_digest(tmp_path / "src") == before


def test_bad_values_are_located(tmp_path):
    episodes = synthetic.generate(CONFIG)
    features = {k: v for k, v in synthetic.features(CONFIG.image_size, use_videos=False).items() if k not in RECAP[1:]}
    features["score"] = {"dtype": "float32", "shape": [1], "names": None}
    features["outcome"] = {"dtype": "string", "shape": [1], "names": None}
    writer = lerobot.LeRobotDatasetWriter.create(tmp_path / "src", fps=CONFIG.fps, features=features, use_videos=False)
    with writer:
        for i, ep in enumerate(episodes):
            frames = {k: v for k, v in ep.frames.items() if k not in RECAP[1:]}
            frames["score"] = np.zeros(ep.length, np.float32)
            frames["outcome"] = ["success"] * ep.length
            if i == 2:
                frames["intervention"] = frames["intervention"].copy()
                frames["intervention"][3] = 2
                frames["score"][-1] = np.nan
                frames["outcome"][-1] = "running"
            writer.add_episode(frames, ep.task)
        writer.finalize()
    with pytest.raises(errors.DatasetError, match=r"'intervention' is 2 at episode 2, frame 3 .*human frames 1"):
        convert.add_recap_columns(tmp_path / "src", tmp_path / "dst", convert.ConvertConfig(all_success=True))
    with pytest.raises(errors.DatasetError, match=r"'score' is nan on the last frame of episode 2 "):
        convert.add_recap_columns(
            tmp_path / "src", tmp_path / "dst", convert.ConvertConfig(demos=True, success_column="score")
        )
    with pytest.raises(
        errors.DatasetError, match=r"'outcome' is 'running' on the last frame of episode 2 .*success/fa"
    ):
        convert.add_recap_columns(
            tmp_path / "src", tmp_path / "dst", convert.ConvertConfig(demos=True, success_column="outcome")
        )
    with pytest.raises(errors.DatasetError, match=r"no success information .*--success-file"):
        convert.add_recap_columns(tmp_path / "src", tmp_path / "dst", convert.ConvertConfig(demos=True))
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("name", ["v2.1_video", "v3.0_video", "v3.0_image"])
def test_lerobot_written_fixtures(tmp_path, name):
    """Datasets written by the real LeRobot library, carrying community labels: refused, then relabelled by hand."""
    src = reader_test.copy_fixture(name, tmp_path)
    before = tree_digest(src)
    with pytest.raises(errors.DatasetError, match=r"would replace \(reward_label, value_label, adv_ind\)"):
        convert.add_recap_columns(src, tmp_path / "dst", convert.ConvertConfig())
    result = convert.add_recap_columns(src, tmp_path / "dst", convert.ConvertConfig(overwrite_columns=True))
    assert tree_digest(src) == before
    out = result.dataset
    assert result.summary.success_source == "column 'reward' (last frame > 0)"

    # README of the fixtures: lengths 12/16/20; episodes 0 and 2 "pick up the red cube" succeed, episode 1
    # "fold the towel" fails and is human on frames 4..7. Paper labels by hand: the cube's normaliser is 20,
    # the towel's 16, and the towel's failure penalty (16 steps) clips all of its frames to -1.
    i12, i16, i20 = np.arange(12), np.arange(16), np.arange(20)
    value = np.concatenate([-(11 - i12) / 20, np.full(16, -1.0), -(19 - i20) / 20]).astype(np.float32)
    np.testing.assert_allclose(out.column("value_label"), value, atol=1e-7)
    reward_label = np.concatenate(
        [np.r_[np.full(11, -1 / 20), 0.0], np.r_[np.zeros(15), -1.0], np.r_[np.full(19, -1 / 20), 0.0]]
    )
    np.testing.assert_allclose(out.column("reward_label"), reward_label, atol=1e-7)
    np.testing.assert_array_equal(out.column("reward"), np.r_[np.zeros(11), 1, np.zeros(35), 1])
    human = np.r_[np.zeros(12), (i16 >= 4) & (i16 <= 7), np.zeros(20)]
    assert out.column("adv_ind").tolist() == ["positive" if h else "none" for h in human]
    cube, towel = result.summary.tasks
    assert (cube.task, cube.episodes, cube.successes, cube.max_length) == ("pick up the red cube", 2, 2, 20)
    assert (towel.task, towel.successes, towel.human_frames, towel.frames) == ("fold the towel", 0, 4, 16)
    original = lerobot.LeRobotDataset.open(src)
    for i in (0, 13, 47):
        for key in out.camera_keys:
            np.testing.assert_array_equal(out[i][key], original[i][key])


def test_symlinked_source_is_never_written_through(tmp_path):
    """A source made of symlinks (a hub cache snapshot) stays intact, and the output holds no symlinks."""
    episodes = rollouts(tmp_path / "real", version="v2.1", use_videos=True)
    for path in sorted((tmp_path / "real").rglob("*")):
        if path.is_file():
            link = tmp_path / "src" / path.relative_to(tmp_path / "real")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    before = tree_digest(tmp_path / "real")
    config = convert.ConvertConfig(success_file=write_outcomes(tmp_path / "o.json", episodes))
    out = convert.add_recap_columns(tmp_path / "src", tmp_path / "dst", config).dataset
    assert tree_digest(tmp_path / "real") == before
    assert all((tmp_path / "src" / rel).is_symlink() for rel in before)
    assert not any(p.is_symlink() for p in (tmp_path / "dst").rglob("*"))
    for video in (tmp_path / "dst" / "videos").rglob("*.mp4"):
        assert os.stat(video).st_ino == os.stat(tmp_path / "real" / video.relative_to(tmp_path / "dst")).st_ino
    assert_columns(out, truth(episodes))


def test_task_max_length_puts_a_new_batch_on_an_old_scale(tmp_path):
    episodes = rollouts(tmp_path / "src")
    own = {}
    for ep in episodes:
        own[ep.task] = max(own.get(ep.task, 0), ep.length)
    assert convert.task_max_lengths(lerobot.LeRobotDataset.open(tmp_path / "src")) == own
    red, green, blue = synthetic.TASKS
    # red: an earlier batch had longer episodes; green, blue: absent (own length); extra task ignored.
    reference = {red: 40, "wipe the table": 25}
    outcomes = write_outcomes(tmp_path / "o.json", episodes)
    config = convert.ConvertConfig(success_file=outcomes, task_max_length=reference)
    result = convert.add_recap_columns(tmp_path / "src", tmp_path / "dst", config)
    expected = labels.compute_columns(
        episode_lengths=np.asarray([ep.length for ep in episodes]),
        success=np.asarray([ep.success for ep in episodes]),
        tasks=[ep.task for ep in episodes],
        intervention=np.concatenate([ep.frames["intervention"] for ep in episodes]),
        task_max_length={red: 40, green: own[green], blue: own[blue]},
    )
    assert_columns(result.dataset, expected)
    assert [(t.task, t.normaliser) for t in result.summary.tasks] == [(red, 40), (green, own[green]), (blue, own[blue])]
    table = convert.format_summary(result.summary)
    assert "norm_len" in table and any(line.startswith(red) and line.endswith(" 40") for line in table.splitlines())

    with pytest.raises(errors.ConfigError, match=r"gives task 'pick up the red cube' the length 0"):
        convert.compute_recap_columns(result.dataset, dataclasses.replace(config, task_max_length={red: 0}))
    # Issue 14.7: a batch longer than the reference's normaliser is refused, not silently put on a larger scale.
    with pytest.raises(errors.UserError, match=r"longer than the normaliser 3 of the reference"):
        convert.compute_recap_columns(result.dataset, dataclasses.replace(config, task_max_length={green: 3}))
    # The label scale is recorded with the labels.
    scale = provenance.read_label_scale(tmp_path / "dst")
    assert scale == provenance.LabelScale("paper", None, {red: 40, green: own[green], blue: own[blue]})
