"""scripts/train_value.py's user errors (the script is `cli.run(value_train.main, argv)`)."""

import pytest

from openpi.shared import cli
from openpi.training import value_train


def _main(argv):
    return cli.run(value_train.main, argv, name="openpi.train_value")


def test_user_errors_exit_2_with_one_sentence(tmp_path, capfd):
    with pytest.raises(SystemExit) as exc:
        _main(["value_dbug"])
    assert exc.value.code == 2 and "did you mean 'value_debug'" in capfd.readouterr().err
    with pytest.raises(SystemExit) as exc:
        _main(["value_debug", f"--data_dir={tmp_path / 'missing'}", f"--checkpoint_dir={tmp_path / 'run'}"])
    assert exc.value.code == 2 and "missing" in capfd.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing written before the inputs are checked


def test_missing_pretrained_weights_name_the_flag(tmp_path, capfd, monkeypatch):
    from openpi.datasets import synthetic

    root = tmp_path / "ds"
    synthetic.write_dataset(root, synthetic.SyntheticConfig(num_episodes=2, image_size=32, max_length=16))
    tok = tmp_path / "tok.model"
    from openpi.shared import testing

    testing.train_tiny_sentencepiece(tok, extra_symbols=testing.GEMMA3_SYMBOLS)
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENPI_VALUE_SIGLIP_PATH", raising=False)
    from openpi.training import norm_stats

    assets = tmp_path / "assets"
    norm_stats.run(norm_stats.Args(target="value_debug", repo_id=str(root), assets_base_dir=assets))
    capfd.readouterr()
    with pytest.raises(SystemExit) as exc:
        _main(
            ["value_debug", f"--data_dir={root}", f"--tokenizer_path={tok}", "--load_pretrained",
             f"--assets_base_dir={assets}", f"--checkpoint_dir={tmp_path / 'run'}"]
        )  # fmt: skip
    assert exc.value.code == 2
    assert "--siglip-path or $OPENPI_VALUE_SIGLIP_PATH" in capfd.readouterr().err
    assert not (tmp_path / "run").exists()
