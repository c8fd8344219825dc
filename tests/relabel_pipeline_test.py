"""Relabelling end to end: synthetic LeRobot data (v3.0 and v2.1) + a trained tiny value checkpoint -> adv_ind."""

import hashlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import relabel_support

from openpi.datasets import lerobot
from openpi.datasets import synthetic
from openpi.relabel import relabel
from openpi.relabel import relabel_cli
from openpi.shared import cli
from openpi.shared import errors
from openpi.shared import testing

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "label_advantage_from_vlm.py"
LOOKAHEAD = 5


class _Cli:
    """The script's entry point, through the same `cli.run` wrapper (no test imports a script)."""

    @staticmethod
    def main(args):
        return cli.run(relabel_cli.main, args)


def _script():
    return _Cli


def _hashes(root: pathlib.Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory, gemma3_spm_model):
    base = tmp_path_factory.mktemp("relabel")
    v30 = relabel_support.write_dataset(base / "v30", "v3.0")
    v21 = relabel_support.write_dataset(base / "v21", "v2.1")
    run = relabel_support.train_value(v30, gemma3_spm_model, base / "value_run", steps=60)
    return {"base": base, "v30": v30, "v21": v21, "run": run, "tok": gemma3_spm_model}


def _args(setup, data, out, *extra):
    return [
        f"--data_dir={data}",
        f"--checkpoint_dir={setup['run']}",
        f"--output_dir={out}",
        f"--tokenizer_path={setup['tok']}",
        "--batch_size=4",
        f"--lookahead={LOOKAHEAD}",
        "--top-percent",
        "30",
        "--num_workers=2",
        *extra,
    ]


def test_labels_both_formats_source_untouched(setup):
    script = _script()
    base = setup["base"]
    before = {k: _hashes(setup[k]) for k in ("v30", "v21")}
    results = {}
    for key in ("v30", "v21"):
        res = script.main(_args(setup, setup[key], base / f"out_{key}"))
        out = lerobot.LeRobotDataset.open(base / f"out_{key}")
        assert out.version == lerobot.LeRobotDataset.open(setup[key]).version
        labels = np.asarray(out.column("adv_ind")).reshape(-1)
        np.testing.assert_array_equal(labels, res.result.adv_ind.astype(str))
        results[key] = (res, labels)
        assert _hashes(setup[key]) == before[key]  # the source is never modified
        report_dir = base / f"out_{key}.relabel_report"
        assert (report_dir / "report.json").is_file() and (report_dir / "values_episodes.png").is_file()
        # Unchanged videos are shared by hard link, never by symlink.
        for video in (base / f"out_{key}" / "videos").rglob("*.mp4"):
            assert not video.is_symlink() and video.stat().st_nlink >= 2
    # Same data in both layouts -> same labels.
    np.testing.assert_array_equal(results["v30"][1], results["v21"][1])

    res, labels = results["v30"]
    ds = lerobot.LeRobotDataset.open(setup["v30"])
    episodes = synthetic.generate(relabel_support.DATA)
    human = np.asarray(ds.column("intervention")).reshape(-1) == 1
    assert (labels[human] == "positive").all()
    success_end, failure_end = [], []
    for info, ep in zip(ds.episodes, episodes, strict=True):
        sl = slice(info.from_index, info.to_index)
        if not human[sl][-LOOKAHEAD:].any():
            (success_end if ep.success else failure_end).append(labels[sl][-LOOKAHEAD:])
    assert success_end and failure_end
    # The autonomous segments that reach success are positive; failure endings are negative (the community
    # terminal reward of 0 on failures is not trusted).
    success_pos = np.mean(np.concatenate(success_end) == "positive")
    failure_pos = np.mean(np.concatenate(failure_end) == "positive")
    assert success_pos > 0.8, success_pos
    assert failure_pos < 0.1, failure_pos
    # The report records the advantage settings and which relabel config ran (neither hides the other).
    assert res.report["config"]["lookahead"] == LOOKAHEAD and res.report["config"]["top_percent"] == 30.0
    assert res.report["relabel_config"] == "default"
    # Per task, ~30 % of the autonomous frames are positive.
    for task in res.report["tasks"]:
        if task["autonomous_frames"]:
            assert abs(task["positive_fraction_autonomous"] - 0.3) < 0.05


def test_rerun_is_byte_identical_and_uses_the_cache(setup, tmp_path):
    script = _script()
    base = setup["base"]
    first = tmp_path / "a"
    res1 = script.main(_args(setup, setup["v30"], first, f"--cache_dir={tmp_path / 'cache'}"))
    res2 = script.main(_args(setup, setup["v30"], tmp_path / "b", f"--cache_dir={tmp_path / 'cache'}"))
    assert res1.stats["frames_cached"] == 0 and res2.stats["frames_cached"] == res2.stats["frames_total"]
    assert _hashes(first) == _hashes(tmp_path / "b")
    # In place on a copy gives the same data files as the copy-out mode.
    inplace = tmp_path / "inplace"
    shutil.copytree(setup["v30"], inplace)
    args = [a for a in _args(setup, inplace, "x") if not a.startswith("--output_dir")]
    script.main([*args, "--in_place", f"--cache_dir={tmp_path / 'cache2'}"])
    assert {k: v for k, v in _hashes(inplace).items() if k.startswith("data/")} == {
        k: v for k, v in _hashes(first).items() if k.startswith("data/")
    }
    del base


def _start(setup, out, cache):
    cmd = [sys.executable, str(SCRIPT), *_args(setup, setup["v30"], out, f"--cache_dir={cache}", "--batch_size=2")]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _wait_kill(proc, cond, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if cond():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()


# ~50 s: kills a run at several points; the default suite keeps the 2-process SIGKILL test.
@pytest.mark.slow
def test_sigkill_at_several_points_then_resume(setup, tmp_path):
    """SIGKILL during start-up, after a few cached episodes and later; the resumed output equals a clean run."""
    source_before = _hashes(setup["v30"])
    reference = tmp_path / "reference"
    _script().main(_args(setup, setup["v30"], reference, f"--cache_dir={tmp_path / 'ref_cache'}", "--batch_size=2"))

    out, cache = tmp_path / "out", tmp_path / "cache"

    def cached():
        return len(list(cache.rglob("episode_*.npz")))

    proc = _start(setup, out, cache)
    _wait_kill(proc, lambda: True)  # at once, during start-up
    killed_mid_inference = 0
    for k in (1, 4):
        if out.exists():
            break  # on a fast machine a run may finish before the poll sees k cached episodes
        proc = _start(setup, out, cache)
        _wait_kill(proc, lambda k=k: cached() >= k)
        if proc.returncode == -signal.SIGKILL:
            assert not out.exists()
            killed_mid_inference += 1
    assert killed_mid_inference >= 1
    # Once every value is cached, try to kill while the output is being staged (it may also finish first).
    if not out.exists():
        proc = _start(setup, out, cache)
        _wait_kill(proc, lambda: any(tmp_path.glob(".out.tmp-*")))
    if not out.exists():
        proc = _start(setup, out, cache)
        assert proc.wait(timeout=300) == 0
    assert not any(tmp_path.glob(".out.tmp-*")) and not list(cache.rglob("*.tmp"))
    assert _hashes(out) == _hashes(reference)
    assert _hashes(setup["v30"]) == source_before


def test_bad_inputs_give_clear_errors(setup, tmp_path, capfd):
    script = _script()
    v30 = setup["v30"]
    with pytest.raises(SystemExit) as e:
        script.main(_args(setup, v30, tmp_path / "o1", "--checkpoint_dir=" + str(tmp_path / "nope")))
    assert e.value.code == 2
    assert "does not exist" in capfd.readouterr().err

    with pytest.raises(errors.ConfigError, match="differ from the cameras"):
        relabel.relabel(
            relabel.RelabelConfig(
                data_dir=str(v30),
                checkpoint_dir=str(setup["run"]),
                output_dir=str(tmp_path / "o2"),
                tokenizer_path=str(setup["tok"]),
                cameras=(synthetic.HEAD_CAMERA, synthetic.RIGHT_WRIST_CAMERA),
            )
        )

    # A tokenizer other than the one the value model was trained with.
    other = testing.train_tiny_sentencepiece(
        tmp_path / "other.model", vocab_size=450, extra_symbols=testing.GEMMA3_SYMBOLS
    )
    with pytest.raises(errors.ConfigError, match="not the one this value model was trained with"):
        relabel.relabel(
            relabel.RelabelConfig(
                data_dir=str(v30),
                checkpoint_dir=str(setup["run"]),
                output_dir=str(tmp_path / "o5"),
                tokenizer_path=str(other),
            )
        )

    # A dataset without the reward column.
    episodes = synthetic.generate(synthetic.SyntheticConfig(num_episodes=2, image_size=32, max_length=16))
    features = synthetic.features(32)
    features.pop("reward")
    writer = lerobot.LeRobotDatasetWriter.create(tmp_path / "noreward", fps=10, features=features, robot_type="yam")
    with writer:
        for ep in episodes:
            writer.add_episode({k: v for k, v in ep.frames.items() if k != "reward"}, ep.task)
        writer.finalize()
    with pytest.raises(errors.DatasetError, match="no 'reward' column"):
        relabel.relabel(
            relabel.RelabelConfig(
                data_dir=str(tmp_path / "noreward"), checkpoint_dir=str(setup["run"]), output_dir=str(tmp_path / "o3")
            )
        )

    # A dataset where every frame is human.
    ds = lerobot.LeRobotDataset.open(v30)
    lerobot.copy_with_columns(ds, tmp_path / "allhuman", {"intervention": np.ones(ds.num_frames, np.int64)})
    with pytest.raises(errors.DatasetError, match="no autonomous frames"):
        relabel.relabel(
            relabel.RelabelConfig(
                data_dir=str(tmp_path / "allhuman"), checkpoint_dir=str(setup["run"]), output_dir=str(tmp_path / "o4")
            )
        )

    with pytest.raises(errors.ConfigError, match="--output_dir"):
        relabel.RelabelConfig(data_dir=str(v30), checkpoint_dir=str(setup["run"])).validate()
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_in_place_on_a_tree_of_symlinks_never_writes_through(setup, tmp_path):
    """The community trap: relabelling a v2.1 tree of symlinks in place overwrote the source it points to."""
    source = setup["v21"]
    before = _hashes(source)
    tree = tmp_path / "links"
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        link = tree / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    args = [a for a in _args(setup, tree, "x") if not a.startswith("--output_dir")]
    res = _script().main([*args, "--in_place=true", f"--cache_dir={tmp_path / 'cache'}"])
    assert _hashes(source) == before
    labels = np.asarray(lerobot.LeRobotDataset.open(tree).column("adv_ind")).reshape(-1)
    np.testing.assert_array_equal(labels, res.result.adv_ind.astype(str))
    assert not any(p.is_symlink() for p in (tree / "data").rglob("*.parquet"))


def test_flags_accept_underscores_dashes_and_bool_values():
    """The community spellings work with and without a config name; a registered config brings its settings."""
    config = relabel_cli.parse_args(["--top_percent=40", "--use_ema=false", "--in_place", "--batch-size", "8"])
    assert config.name == "default" and config.top_percent == 40 and not config.use_ema and config.in_place
    assert config.batch_size == 8
    named = relabel_cli.parse_args(["yam_vial", "--data_dir=/d", "--output-dir", "/o"])
    assert named.name == "yam_vial" and named.value_config == "value_yam_vial_30fps" and named.lookahead == 50
    assert named.cameras is not None and len(named.cameras) == 3 and named.data_dir == "/d"
    with pytest.raises(errors.ConfigError, match="true or false"):
        relabel_cli.parse_args(["--use_ema=maybe"])
    with pytest.raises(errors.ConfigError, match="yam_vial"):
        relabel_cli.parse_args(["yam_via", "--data_dir=/d"])


def test_help_lists_the_configs(capsys):
    with pytest.raises(SystemExit) as e:
        relabel_cli.parse_args(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in relabel.CONFIGS)
