"""`add_recap_columns.py` end to end (its `main`, in process) on tiny datasets written to disk."""

import json
import subprocess

import numpy as np
import pytest

from openpi.datasets import convert_cli as add_recap_columns
from openpi.datasets import convert_test
from openpi.datasets import lerobot
from openpi.datasets import recap_columns
from openpi.recap import labels
from openpi.recap import provenance


@pytest.fixture
def cli(capsys):
    """`add_recap_columns.py <args>` in this process: (exit status, stdout, stderr) as a CompletedProcess."""

    def run(*args) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            add_recap_columns.main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return run


def test_cli_converts_and_refuses(tmp_path, cli):
    episodes = convert_test.rollouts(tmp_path / "src", version="v2.1", use_videos=True)
    before = convert_test.tree_digest(tmp_path / "src")
    outcomes = convert_test.write_outcomes(tmp_path / "outcomes.json", episodes)

    result = cli(
        tmp_path / "src", "--output-dir", tmp_path / "dst", "--success-file", outcomes, "--mode", "per_episode"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{(tmp_path / 'dst').resolve()} (v2.1, per_episode labels)"
    assert lines[1] == f"success from file {outcomes}; interventions from column 'intervention'"
    rate = np.mean([ep.success for ep in episodes])
    assert lines[-1].startswith("all") and f"{rate:.1%}" in lines[-1] and " 8 " in lines[-1]
    assert sum(line.startswith("pick up") for line in lines) == 3
    out = lerobot.LeRobotDataset.open(tmp_path / "dst")
    recap_columns.validate_recap_columns(out)
    expected = convert_test.truth(episodes, labels.LabelConfig(mode="per_episode"))
    np.testing.assert_array_equal(out.column("value_label"), expected["value_label"])
    assert convert_test.tree_digest(tmp_path / "src") == before

    # Errors: one line on stderr, exit code 2, no traceback, nothing written.
    for args, message in [
        (["--output-dir", tmp_path / "dst", "--all-success"], "already exists"),
        (["--output-dir", tmp_path / "x", "--intervention-column", "human"], "no intervention column 'human'"),
        (["--output-dir", tmp_path / "x", "--all-success", "--c-fail", "0.5"], "c_fail is 0.5"),
        (["--output-dir", tmp_path / "x", "--all-success", "--success-column", "reward"], "given twice"),
    ]:
        result = cli(tmp_path / "src", *args)
        assert result.returncode == 2, result.stderr
        assert " ERROR openpi.add_recap_columns: " in result.stderr and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
        assert not (tmp_path / "x").exists()


def test_help_shows_usage(cli):
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    assert "uv run scripts/add_recap_columns.py /data/yam_rollouts --output-dir" in result.stdout
    for flag in ("--success-file", "--all-success", "--demos", "--overwrite-columns", "--mode", "--c-fail"):
        assert flag in result.stdout, flag


def test_run_in_process(tmp_path):
    episodes = convert_test.rollouts(tmp_path / "src", intervention=None)
    args = add_recap_columns.Args(
        source=str(tmp_path / "src"), output_dir=tmp_path / "out", demos=True, all_success=True, copy_videos=True
    )
    result = add_recap_columns.run(args)
    assert result.summary.human_fraction == 1.0 and result.summary.success_rate == 1.0
    assert result.dataset.num_frames == sum(ep.length for ep in episodes)
    assert set(result.dataset.column("adv_ind").tolist()) == {"positive"}
    assert json.loads((tmp_path / "out" / "meta" / "info.json").read_text())["features"]["adv_ind"]["dtype"] == "string"


def test_task_max_length_from_reuses_the_recorded_normaliser(tmp_path, cli):
    """Issue 14.7: a new batch is labelled with the normaliser and c_fail the reference's labels actually used (its
    meta/recap.json), not with the reference's longest episodes; a longer batch or an unrecorded reference is refused."""
    ref_episodes = convert_test.rollouts(tmp_path / "ref_src")
    add_recap_columns.run(
        add_recap_columns.Args(
            source=str(tmp_path / "ref_src"),
            output_dir=tmp_path / "ref",
            success_file=convert_test.write_outcomes(tmp_path / "ref.json", ref_episodes),
            c_fail=7.0,
        )
    )
    recorded = provenance.read(tmp_path / "ref")
    assert recorded["label_scale"]["c_fail"] == 7.0
    # The reference was labelled on a larger scale than its own episodes (e.g. an earlier iteration's): say 50.
    recorded["label_scale"]["task_normaliser"] = {t: 50 for t in recorded["label_scale"]["task_normaliser"]}
    provenance.write(tmp_path / "ref", {k: v for k, v in recorded.items() if k != "version"})

    episodes = convert_test.rollouts(tmp_path / "src")
    outcomes = convert_test.write_outcomes(tmp_path / "o.json", episodes)
    args = add_recap_columns.Args(
        source=str(tmp_path / "src"), output_dir=tmp_path / "out", success_file=outcomes,
        task_max_length_from=str(tmp_path / "ref"),
    )  # fmt: skip
    result = add_recap_columns.run(args)
    assert {t.normaliser for t in result.summary.tasks} == {50}
    lengths = np.asarray([ep.length for ep in episodes])
    expected = labels.compute_columns(
        episode_lengths=lengths,
        success=np.asarray([ep.success for ep in episodes]),
        tasks=[ep.task for ep in episodes],
        intervention=np.concatenate([ep.frames["intervention"] for ep in episodes]),
        config=labels.LabelConfig(c_fail=7.0),
        task_max_length={ep.task: 50 for ep in episodes},
    )
    np.testing.assert_allclose(result.dataset.column("value_label"), expected["value_label"], atol=1e-6)
    assert provenance.read_label_scale(tmp_path / "out") == provenance.LabelScale("paper", 7.0, {
        ep.task: 50 for ep in episodes
    })  # fmt: skip

    for ref, extra, message in [
        (tmp_path / "ref_src", [], "records no label scale"),  # labelled by another tool: scale unknown
        (tmp_path / "ref", ["--c-fail", "9"], "differs from the reference's c_fail"),
    ]:
        out = cli(tmp_path / "src", "--output-dir", tmp_path / "x", "--success-file", outcomes,
                  "--task-max-length-from", ref, *extra)  # fmt: skip
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    recorded["label_scale"]["task_normaliser"] = {t: 3 for t in recorded["label_scale"]["task_normaliser"]}
    provenance.write(tmp_path / "ref", {k: v for k, v in recorded.items() if k != "version"})
    out = cli(tmp_path / "src", "--output-dir", tmp_path / "x", "--success-file", outcomes,
              "--task-max-length-from", tmp_path / "ref")  # fmt: skip
    assert out.returncode == 2 and "--rescale-labels" in out.stderr, out.stderr
    assert not (tmp_path / "x").exists()
