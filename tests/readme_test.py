"""Keeps the README honest: every command it shows names a script that exists, a registered config, and flags
that the script's CLI accepts. (Running them for real needs a cluster's data and weights; the demo and the
other tests run the same scripts end to end on toy data.)"""

import pathlib
import re
import shlex

import pytest

from openpi.datasets import convert_cli
from openpi.datasets import merge_cli
from openpi.datasets import synthetic_cli
from openpi.serving import serve_cli
from openpi.shared import cli as _cli
from openpi.sim import collect_cli
from openpi.sim import eval_cli
from openpi.training import config as _config
from openpi.training import value_config

REPO = pathlib.Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
# The docs/ pages the README links to (the simulation's lab notebook, ...): their commands are checked like its own.
DOCS = sorted((REPO / "docs").glob("*.md"))
DOCUMENTED = "\n".join([README, *(page.read_text() for page in DOCS)])


# Scripts whose flags are one tyro dataclass: the README's flags must parse into it (the scripts are thin entry
# points over these modules; no test imports a script).
FLAT_ARGS = {
    "scripts/add_recap_columns.py": convert_cli.Args,
    "scripts/merge_datasets.py": merge_cli.Args,
    "scripts/make_demo_dataset.py": synthetic_cli.Args,
    "scripts/collect_rollouts.py": collect_cli.Args,
    "scripts/eval_policy.py": eval_cli.Args,
}


def _commands() -> list[list[str]]:
    """Every `uv run <script> args...` in the README and docs/, placeholders like <dataset> replaced by a dummy value."""
    commands = []
    for match in re.finditer(r"uv run ((?:scripts|benchmarks)/[\w./]+\.py[^`#\n\"]*)", DOCUMENTED):
        text = re.sub(r"<[^>]+>", "x", match.group(1)).replace("...", "").strip()
        commands.append(shlex.split(text))
    return commands


COMMANDS = _commands()


def test_readme_links_every_docs_page():
    assert DOCS, "docs/ has no page"
    for page in DOCS:
        assert f"(docs/{page.name})" in README, f"README does not link docs/{page.name}"


def test_readme_shows_the_loop():
    scripts = {c[0] for c in COMMANDS}
    for script in ("scripts/train.py", "scripts/train_value.py", "scripts/label_advantage_from_vlm.py",
                   "scripts/serve_policy.py", "scripts/compute_norm_stats.py", "scripts/add_recap_columns.py"):  # fmt: skip
        assert script in scripts


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_readme_command_parses(command):
    script, args = command[0], command[1:]
    assert (REPO / script).is_file(), f"README names {script}, which does not exist"
    if args == ["--help"] or not args:
        return
    if script == "scripts/train.py":
        if args[0] == "x":  # `<config>` placeholder
            return
        config = _config.cli(args)
        assert config.name == args[0]
    elif script == "scripts/train_value.py":
        assert value_config.cli(args).name == args[0]
    elif script == "scripts/compute_norm_stats.py":
        from openpi.training import norm_stats

        assert args[0] in norm_stats.config_names()
    elif script == "scripts/label_advantage_from_vlm.py":
        from openpi.relabel import relabel_cli
        from openpi.training import distributed

        flags, _ = distributed.pop_distributed_flags(args)
        relabel_cli.parse_args(flags)
    elif script == "scripts/serve_policy.py":
        parsed = serve_cli.cli(args, check_config=False)
        if parsed.policy.config != "x_infer":
            assert parsed.policy.config in _config.config_names()
    elif script == "scripts/probe_policy.py":
        from openpi.sim import probe

        config, _ = probe.parse(args)
        assert config.name == args[0]
    elif script in FLAT_ARGS:
        _cli.parse(FLAT_ARGS[script], args)
        if script == "scripts/eval_policy.py" and "--serve-config" in args:
            assert args[args.index("--serve-config") + 1] in _config.config_names()


def test_config_table_names_are_registered():
    table = README.split("## Configs", 1)[1].split("\n## ", 1)[0]
    registered = set(_config.config_names()) | set(value_config.config_names())
    for row in table.splitlines()[2:]:
        cell = row.split("|")[1] if row.startswith("|") else ""
        for name in re.findall(r"`([\w]+)`", cell):
            assert name in registered, f"README's config table lists {name!r}, which is not registered"
