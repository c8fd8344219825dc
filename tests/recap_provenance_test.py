"""meta/recap.json end to end: three RECAP iterations with different episode lengths merge onto one label scale."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from openpi.datasets import convert
from openpi.datasets import lerobot
from openpi.datasets import merge
from openpi.recap import labels
from openpi.recap import provenance

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "merge_datasets.py"
TASK = "pick up the vial"


def _iteration(tmp: pathlib.Path, name: str, lengths: list[int], successes: list[bool]) -> pathlib.Path:
    """Raw rollouts (state, intervention, success) of one iteration, converted with its own label scale."""
    spec = {"dtype": "float32", "shape": [2], "names": None}
    features = {
        "observation.state": spec,
        "intervention": {"dtype": "int64", "shape": [1], "names": None},
        "success": {"dtype": "bool", "shape": [1], "names": None},
    }
    writer = lerobot.LeRobotDatasetWriter.create(tmp / f"{name}_raw", fps=10, features=features, use_videos=False)
    rng = np.random.default_rng(len(lengths))
    with writer:
        for length, ok in zip(lengths, successes, strict=True):
            flags = (np.arange(length) >= length // 2).astype(np.int64) if not ok else np.zeros(length, np.int64)
            done = np.arange(length) == length - 1
            frames = {"observation.state": rng.normal(size=(length, 2)), "intervention": flags, "success": done & ok}
            writer.add_episode(frames, TASK)
        writer.finalize()
    out = tmp / name
    convert.add_recap_columns(tmp / f"{name}_raw", out, convert.ConvertConfig(success_column="success"))
    return out


def test_three_iterations_keep_one_label_scale(tmp_path):
    """Issue 14.7: iterations normalised by 12, 20 and 30 frames are refused as they are, and rescaled on request."""
    runs = [
        ([12, 9], [True, False]),
        ([20, 14, 7], [False, True, True]),
        ([30, 11], [True, False]),
    ]
    iterations = [_iteration(tmp_path, f"iter{i + 1}", *run) for i, run in enumerate(runs)]
    assert [provenance.read_label_scale(p).task_normaliser[TASK] for p in iterations] == [12, 20, 30]

    with pytest.raises(provenance.ProvenanceError, match=r"normalised by 20 frames .* but by 12"):
        merge.merge_datasets(iterations, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()

    merged = merge.merge_datasets(iterations, tmp_path / "all", rescale_labels=True)
    lengths = [length for run, _ in runs for length in run]
    expected = labels.compute_columns(
        episode_lengths=np.asarray(lengths),
        success=np.asarray([ok for _, oks in runs for ok in oks]),
        tasks=[TASK] * len(lengths),
        intervention=np.concatenate([lerobot.LeRobotDataset.open(p).column("intervention") for p in iterations]),
        task_max_length={TASK: 30},
    )
    for column in ("value_label", "reward_label"):
        np.testing.assert_allclose(merged.column(column), expected[column], atol=1e-6)
    meta = provenance.read(tmp_path / "all")
    assert meta["label_scale"] == {"mode": "paper", "c_fail": None, "task_normaliser": {TASK: 30}}
    assert meta["labels_rescaled"] and [s["root"] for s in meta["sources"]] == [str(p) for p in iterations]
    assert meta["sources"][1]["label_scale"]["task_normaliser"] == {TASK: 20}
    assert meta["sources"][0]["fingerprint"] == provenance.dataset_fingerprint(iterations[0])

    # A later iteration merged with that result is checked against the recorded (rescaled) scale.
    again = merge.merge_datasets([tmp_path / "all", iterations[2]], tmp_path / "again")
    assert provenance.read_label_scale(again.root).task_normaliser == {TASK: 30}

    # The CLI: one sentence, exit 2, no traceback.
    cmd = [sys.executable, str(SCRIPT), *map(str, iterations), "--output-dir", str(tmp_path / "cli")]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert (
        result.returncode == 2
        and "ERROR openpi.merge_datasets: Task" in result.stderr
        and "--rescale-labels" in result.stderr
    )
    assert "Traceback" not in result.stderr
    result = subprocess.run([*cmd, "--rescale-labels"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "cli" / "meta" / "recap.json").read_text())["label_scale"]["task_normaliser"] == {
        TASK: 30
    }


def _tamper(root: pathlib.Path, edit) -> None:
    meta = provenance.read(root)
    edit(meta["label_scale"])
    provenance.write(root, {k: v for k, v in meta.items() if k != "version"})


@pytest.mark.parametrize("edit", [lambda s: s.update(task_normaliser={}), lambda s: s.pop("task_normaliser")])
def test_an_empty_or_missing_normaliser_is_a_provenance_error(tmp_path, edit):
    """Issue 20.3: the merge recorded the other dataset's scale for episodes labelled on another one."""
    a = _iteration(tmp_path, "a", [12, 9], [True, False])
    b = _iteration(tmp_path, "b", [12, 5], [False, True])
    _tamper(b, edit)
    with pytest.raises(provenance.ProvenanceError, match=rf"{b}/meta/recap.json records paper-mode labels but no "):
        merge.merge_datasets([a, b], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_merge_recomputes_value_labels_from_the_recorded_scale(tmp_path):
    """Issue 20.3: a recap.json whose normaliser was edited (12 -> 20) merged; the labels are on 12."""
    a = _iteration(tmp_path, "a", [12, 9], [True, False])
    b = _iteration(tmp_path, "b", [12, 5], [False, True])
    merge.merge_datasets([a, b], tmp_path / "ok")  # the honest pair merges
    for root in (a, b):
        _tamper(root, lambda s: s.update(task_normaliser={TASK: 20}))
    with pytest.raises(
        provenance.ProvenanceError,
        match=rf"value_label of episode 0 in {a} does not match .*normalisers \{{'{TASK}': 20\}}.* frame 0",
    ):
        merge.merge_datasets([a, b], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_merge_refuses_a_hand_edited_value_label(tmp_path):
    a = _iteration(tmp_path, "a", [12, 9], [True, False])
    ds = lerobot.LeRobotDataset.open(a)
    values = np.array(ds.column("value_label"))
    values[ds.episodes[1].from_index + 3] -= 0.25
    edited = lerobot.copy_with_columns(ds, tmp_path / "edited", {"value_label": values})
    provenance.write(edited.root, {k: v for k, v in provenance.read(a).items() if k != "version"})
    with pytest.raises(provenance.ProvenanceError, match=r"value_label of episode 1 in .*edited.* frame 3"):
        merge.merge_datasets([edited], tmp_path / "m")


def test_a_reference_scale_without_normaliser_is_a_provenance_error(tmp_path):
    """Issue 20.3: --task-max-length-from took an empty normaliser and labelled the batch on its own scale."""
    ref = _iteration(tmp_path, "ref", [12, 9], [True, False])
    assert convert.reference_label_scale(ref, None).task_normaliser == {TASK: 12}
    _tamper(ref, lambda s: s.update(task_normaliser={}))
    with pytest.raises(provenance.ProvenanceError, match=r"records paper-mode labels but no task_normaliser.*drop"):
        convert.reference_label_scale(ref, None)


@pytest.mark.parametrize("rescale", [False, True])
def test_a_normaliser_entry_for_a_task_the_dataset_lacks_is_refused(tmp_path, rescale):
    """Issue 29.13: an entry for a task no episode has was copied into the merged recap.json unchecked."""
    a = _iteration(tmp_path, "a", [12, 9], [True, False])
    b = _iteration(tmp_path, "b", [12, 5], [False, True])
    _tamper(b, lambda s: s["task_normaliser"].update({"fold the towel": 40}))
    with pytest.raises(
        provenance.ProvenanceError,
        match=rf"{b}/meta/recap.json has a task_normaliser entry for task 'fold the towel', which no episode",
    ):
        merge.merge_datasets([a, b], tmp_path / "m", rescale_labels=rescale)
    assert not (tmp_path / "m").exists()
