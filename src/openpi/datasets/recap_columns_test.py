"""RECAP column specs and validation, on the LeRobot fixtures and on datasets written here."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openpi.datasets import lerobot
from openpi.datasets import reader_test
from openpi.datasets import recap_columns
from openpi.shared import errors


def write_labelled(root, *, value_name="value_label", adv=None, intervention=None, value=None, version="v3.0"):
    features = {"action": {"dtype": "float32", "shape": [2], "names": None}}
    features.update({k if k != "value_label" else value_name: v for k, v in recap_columns.RECAP_FEATURES.items()})
    writer = lerobot.LeRobotDatasetWriter.create(root, fps=5, features=features, use_videos=False, version=version)
    for e, n in enumerate((4, 6)):
        t = np.arange(n)
        writer.add_episode(
            {
                "action": np.zeros((n, 2), np.float32),
                "intervention": (intervention[e] if intervention else (t < 2)).astype(np.int64),
                "reward": (t == n - 1).astype(np.float32),
                "reward_label": np.where(t == n - 1, 0.0, -1.0 / 6).astype(np.float32),
                value_name: (value[e] if value else -(n - 1 - t) / 6).astype(np.float32),
                "adv_ind": adv[e] if adv else np.where(t < 2, "positive", "none"),
            },
            "task",
        )
    return writer.finalize()


def test_features_match_the_lerobot_fixture():
    ds = lerobot.LeRobotDataset.open(reader_test.fixture_path("v3.0_video"))
    for name, spec in recap_columns.RECAP_FEATURES.items():
        assert ds.features[name] == spec


def test_fixture_value_label_is_out_of_range():
    # The fixture's value_label is -(L-1-i)/8, i.e. below -1 early in every episode.
    ds = lerobot.LeRobotDataset.open(reader_test.fixture_path("v2.1_video"))
    with pytest.raises(
        errors.DatasetError, match=r"'value_label' is -1.375 at episode 0, frame 0 \(index 0\).*\[-1, 0\]"
    ):
        recap_columns.validate_recap_columns(ds)
    others = [c for c in recap_columns.COLUMNS if c != "value_label"]
    assert recap_columns.validate_recap_columns(ds, required=others) == {c: c for c in others}


def test_valid_dataset_and_legacy_spelling(tmp_path):
    ds = write_labelled(tmp_path / "good")
    assert recap_columns.validate_recap_columns(ds) == {c: c for c in recap_columns.COLUMNS}
    legacy = write_labelled(tmp_path / "legacy", value_name="value_lable")
    names = recap_columns.validate_recap_columns(legacy)
    assert names["value_label"] == "value_lable"
    np.testing.assert_array_equal(
        recap_columns.read_column(legacy, "value_label"), recap_columns.read_column(ds, "value_label")
    )
    assert json.loads((tmp_path / "legacy" / "meta" / "info.json").read_text())["features"]["value_lable"]


def test_malformed_columns_name_episode_and_frame(tmp_path):
    adv = [np.asarray(["positive"] * 4), np.asarray(["none", "none", "good", "none", "none", "none"])]
    ds = write_labelled(tmp_path / "adv", adv=adv)
    with pytest.raises(errors.DatasetError, match=r"'adv_ind' is 'good' at episode 1, frame 2 \(index 6\)"):
        recap_columns.validate_recap_columns(ds)
    ds = write_labelled(tmp_path / "int", intervention=[np.zeros(4), np.asarray([0, 0, 0, 0, 2, 0])])
    with pytest.raises(errors.DatasetError, match=r"'intervention' is 2 at episode 1, frame 4 \(index 8\)"):
        recap_columns.validate_recap_columns(ds)
    ds = write_labelled(tmp_path / "nan", value=[np.asarray([-0.5, np.nan, -0.1, 0.0]), np.zeros(6)])
    with pytest.raises(errors.DatasetError, match=r"'value_label' is nan at episode 0, frame 1"):
        recap_columns.validate_recap_columns(ds, required=["value_label"])
    ds = write_labelled(tmp_path / "pos", value=[np.zeros(4), np.asarray([0, 0, 0, 0, 0, 0.25])])
    with pytest.raises(errors.DatasetError, match=r"'value_label' is 0.25 at episode 1, frame 5"):
        recap_columns.validate_recap_columns(ds, required=["value_label"])


def test_missing_and_mistyped_columns(tmp_path):
    root = reader_test.copy_fixture("v3.0_image", tmp_path)
    bare = lerobot.LeRobotDataset.open(root)
    ds = lerobot.copy_with_columns(
        bare,
        tmp_path / "typed",
        {"reward_label": np.asarray(["x"] * 48)},
        features_update={"reward_label": {"dtype": "string", "shape": [1]}},
    )
    with pytest.raises(errors.DatasetError, match=r"'reward_label' .* holds <U1 values, expected float32"):
        recap_columns.validate_recap_columns(ds)
    with pytest.raises(errors.ConfigError, match="not a RECAP column"):
        recap_columns.validate_recap_columns(ds, required=["advantage"])
    writer = lerobot.LeRobotDatasetWriter.create(
        tmp_path / "none", fps=5, features={"action": {"dtype": "float32", "shape": [2]}}, use_videos=False
    )
    writer.add_episode({"action": np.zeros((3, 2), np.float32)}, "t")
    ds = writer.finalize()
    with pytest.raises(
        errors.DatasetError, match=r"no RECAP column 'value_label' \(nor the legacy spelling 'value_lable'\)"
    ):
        recap_columns.validate_recap_columns(ds, required=["value_label"])
    with pytest.raises(errors.DatasetError, match="no RECAP column 'adv_ind'; run the RECAP labelling"):
        recap_columns.read_column(ds, "adv_ind")


def _retype_adv_ind(path, retype) -> None:
    """Rewrites the `adv_ind` column of one parquet file as `retype(column)` (what another tool might have written)."""
    table = pq.read_table(path)
    index = table.schema.get_field_index("adv_ind")
    column = retype(table.column(index).combine_chunks())
    pq.write_table(table.set_column(index, pa.field("adv_ind", column.type), column), path)


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_a_dictionary_encoded_indicator_column_is_accepted(tmp_path, version):
    """Issue 29.8: valid values stored dictionary-encoded (pandas categoricals do that) were refused as objects."""
    ds = write_labelled(tmp_path / "ds", version=version)
    want = ds.column("adv_ind").tolist()
    for path in sorted((ds.root / "data").rglob("*.parquet")):
        _retype_adv_ind(path, lambda column: column.dictionary_encode())
    reopened = lerobot.LeRobotDataset.open(ds.root)
    recap_columns.check_indicator_column(reopened)
    assert reopened.column("adv_ind").tolist() == want and reopened[1]["adv_ind"] == want[1]


@pytest.mark.parametrize(
    "retype", [lambda c: c.dictionary_encode(), lambda c: c.cast(pa.large_string())], ids=["dictionary", "large"]
)
def test_v21_episode_files_with_different_string_types_read_as_one_column(tmp_path, retype):
    """Issue 29.8: episode files that disagree on the column's type used to crash with ArrowTypeError."""
    ds = write_labelled(tmp_path / "ds", version="v2.1")
    want = ds.column("adv_ind").tolist()
    _retype_adv_ind(ds.root / "data" / "chunk-000" / "episode_000001.parquet", retype)
    reopened = lerobot.LeRobotDataset.open(ds.root)
    recap_columns.check_indicator_column(reopened)
    assert reopened.column("adv_ind").tolist() == want


def test_v21_episode_files_with_incompatible_types_are_refused_naming_them(tmp_path):
    ds = write_labelled(tmp_path / "ds", version="v2.1")
    _retype_adv_ind(ds.root / "data" / "chunk-000" / "episode_000001.parquet", lambda c: pa.array([1] * len(c)))
    with pytest.raises(errors.DatasetError) as info:
        lerobot.LeRobotDataset.open(ds.root)
    message = str(info.value)
    assert message.startswith("Column 'adv_ind' is string in data/chunk-000/episode_000000.parquet but int64 in ")
    assert "data/chunk-000/episode_000001.parquet" in message and "rewrite" in message
