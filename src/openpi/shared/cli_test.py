import dataclasses

import pytest

from openpi.shared import cli
from openpi.shared import errors


@dataclasses.dataclass(frozen=True)
class _Inner:
    pistar: bool = False
    repo_id: str = "a"


@dataclasses.dataclass(frozen=True)
class _Config:
    name: str = "base"
    batch_size: int = 3
    use_ema: bool = False
    load_pretrained: bool | None = None
    inner: _Inner = _Inner()


_REGISTRY = {"pi06_demo": _Config(name="pi06_demo"), "pi05_demo": _Config(name="pi05_demo", batch_size=8)}


def test_bool_flags_read_from_the_dataclass_including_nested_fields():
    flags = cli.bool_flags(_Config)
    assert flags.plain == {"--use-ema", "--inner.pistar"}
    assert flags.optional == {"--load-pretrained"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--use_ema"], ["--use-ema"]),
        (["--no_use_ema"], ["--no-use-ema"]),
        (["--use_ema=false"], ["--no-use-ema"]),
        (["--use-ema=YES"], ["--use-ema"]),
        (["--use-ema", "0"], ["--no-use-ema"]),
        (["--inner.pistar=1"], ["--inner.pistar"]),
        (["--inner.no_pistar"], ["--inner.no-pistar"]),
        (["--load_pretrained"], ["--load-pretrained", "True"]),
        (["--no-load-pretrained"], ["--load-pretrained", "False"]),
        (["--load_pretrained=no"], ["--load-pretrained", "False"]),
        (["--load_pretrained", "None"], ["--load-pretrained", "None"]),
        (["--load-pretrained=none", "--batch_size=2"], ["--load-pretrained", "None", "--batch-size=2"]),
        (["--batch_size=4", "--data_dir", "x_y"], ["--batch-size=4", "--data-dir", "x_y"]),
        (["--use-ema", "--", "--batch_size"], ["--use-ema", "--", "--batch_size"]),
    ],
)
def test_normalize_flags_accepts_community_and_tyro_spellings(args, expected):
    assert cli.normalize_flags(args, cli.bool_flags(_Config)) == expected


def test_normalize_flags_refuses_a_non_boolean_word():
    with pytest.raises(errors.ConfigError, match="--use-ema takes true or false"):
        cli.normalize_flags(["--use_ema=maybe"], cli.bool_flags(_Config))
    with pytest.raises(errors.ConfigError, match="takes no value"):
        cli.normalize_flags(["--no-use-ema=true"], cli.bool_flags(_Config))


def test_parse_applies_overrides_on_the_default():
    config = cli.parse(
        _Config, ["--batch_size=5", "--use_ema=true", "--inner.repo_id", "b"], default=_REGISTRY["pi05_demo"]
    )
    assert config == _Config(name="pi05_demo", batch_size=5, use_ema=True, inner=_Inner(repo_id="b"))


def test_optional_bool_takes_none_and_plain_bool_does_not():
    default = dataclasses.replace(_REGISTRY["pi05_demo"], load_pretrained=True)
    assert cli.parse(_Config, ["--load_pretrained", "None"], default=default).load_pretrained is None
    assert cli.parse(_Config, ["--load-pretrained=NONE", "--batch_size=3"], default=default).batch_size == 3
    with pytest.raises(errors.ConfigError, match="--use-ema takes true or false"):
        cli.normalize_flags(["--use_ema=None"], cli.bool_flags(_Config))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch_size=x"], "Error parsing --batch-size: invalid literal for int() with base 10: 'x'"),
        (["--use-emma"], "Unrecognized options: --use-emma (did you mean --use-ema?)"),
        (["--nope", "3"], "Unrecognized options: --nope, 3"),
    ],
)
def test_parse_reduces_a_bad_flag_to_one_line(args, message, capsys):
    with pytest.raises(errors.ConfigError) as info:
        cli.parse(_Config, args, prog="prog.py")
    assert str(info.value) == f"{message}; run `prog.py --help` for the flags."
    assert capsys.readouterr().err == ""  # tyro's box is swallowed


@dataclasses.dataclass(frozen=True)
class _Required:
    source: str
    output_dir: str
    overwrite: bool = False
    inner: _Inner = _Inner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus-flag"], "Unrecognized options: --bogus-flag"),
        (["--output-dir", "x", "--bogus_flag=1"], "Unrecognized options: --bogus-flag"),
        (
            ["--inner.nope", "--no-overwrite", "--ovewrite"],
            "Unrecognized options: --inner.nope, --ovewrite (did you mean --overwrite?)",
        ),
    ],
)
def test_an_unknown_flag_is_named_even_when_a_required_one_is_missing(args, message):
    """Issue 20: `--bogus-flag` alone was answered with "missing --output-dir" (tyro checks the required first)."""
    with pytest.raises(errors.ConfigError) as info:
        cli.parse(_Required, args, prog="prog.py")
    assert str(info.value) == f"{message}; run `prog.py --help` for the flags."
    with pytest.raises(errors.ConfigError, match="Missing"):
        cli.parse(_Required, ["--overwrite"], prog="prog.py")  # only the required ones missing: tyro's message


@pytest.mark.parametrize("args", [[], ["-h"], ["--help"]])
def test_help_prints_the_names_and_exits_0_and_no_config_exits_2(args, capsys):
    """Issue 29.12: no config name at all prints the same usage, to stderr, with exit status 2 (it used to be 0)."""
    with pytest.raises(SystemExit) as info:
        cli.parse_named(_REGISTRY, args, kind="training config", prog="train.py")
    captured = capsys.readouterr()
    out, other = (captured.out, captured.err) if args else (captured.err, captured.out)
    assert info.value.code == (0 if args else 2) and not other
    assert out.startswith("usage: train.py <training config name>")
    assert "  pi06_demo\n  pi05_demo\n" in out


def test_config_help_prints_tyros_usage_and_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        cli.parse_named(_REGISTRY, ["pi05_demo", "--help"], kind="training config", prog="train.py")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "train.py pi05_demo" in out and "--batch-size" in out and "(default: 8)" in out


def test_unknown_config_suggests_the_nearest_name():
    with pytest.raises(errors.ConfigError, match="did you mean 'pi06_demo'"):
        cli.parse_named(_REGISTRY, ["pi06_dem"], kind="training config", prog="train.py")


def test_flag_before_the_config_name_is_a_user_error():
    with pytest.raises(errors.ConfigError, match="Name a training config first"):
        cli.parse_named(_REGISTRY, ["--batch-size=3", "pi06_demo"], kind="training config")


def test_parse_named_returns_the_overridden_config():
    config = cli.parse_named(_REGISTRY, ["pi06_demo", "--no_use_ema", "--batch_size", "2"], kind="training config")
    assert config == _Config(name="pi06_demo", batch_size=2)


def test_run_turns_a_user_error_into_one_logged_line_and_exit_2(capsys):
    def main(args):
        raise errors.DatasetError(f"No dataset at {args[0]};\n  pass --data-dir.")

    with pytest.raises(SystemExit) as info:
        cli.run(main, ["/nowhere"], name="openpi.test")
    assert info.value.code == 2
    assert info.value.__cause__ is None and info.value.__suppress_context__
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].endswith("ERROR openpi.test: No dataset at /nowhere; pass --data-dir.")


def test_run_returns_the_result_and_lets_bugs_through():
    assert cli.run(lambda args: args, ["a", "b"]) == ["a", "b"]
    with pytest.raises(ZeroDivisionError):
        cli.run(lambda args: 1 / 0, [])


_UTF8_BOX = """\
╭─ Unrecognized options ───────────────────╮
│ Unrecognized options: --no-maybe         │
│ ──────────────────────────────────────── │
│ Perhaps you meant:                       │
│     --maybe {None,True,False}            │
│         (default: None)                  │
│ ──────────────────────────────────────── │
│ For full helptext, run /tmp/t1.py --help │
╰──────────────────────────────────────────╯
"""


def test_one_line_reads_tyros_utf8_box_too():
    """On a UTF-8 terminal tyro draws with box characters (pytest's capture gets the dashed variant)."""
    assert cli._one_line(_UTF8_BOX) == "Unrecognized options: --no-maybe (did you mean --maybe?)"
