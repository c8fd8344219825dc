import pytest

from openpi import sim
from openpi.sim import registry
from openpi.sim import tabletop


def test_make_env_builds_a_tabletop_env_with_overrides():
    assert "tabletop" in sim.env_names()
    assert sim.task_names("tabletop") == list(tabletop.TASKS)
    env = sim.make_env("tabletop", "press_blue", cameras=("top", "wrist"), image_size=16, max_steps=25)
    assert isinstance(env, tabletop.TabletopEnv) and isinstance(env, sim.SimEnv)
    assert (env.task, env.cameras, env.max_steps) == ("press_blue", ("top", "wrist"), 25)
    assert env.reset(0)["images"]["wrist"].shape == (16, 16, 3)


def test_unknown_names_are_one_clear_error():
    with pytest.raises(sim.SimError, match="did you mean 'tabletop'"):
        sim.make_env("tabeltop", "press_red")
    with pytest.raises(sim.SimError, match="did you mean 'press_green'"):
        sim.make_env("tabletop", "press_gren")
    with pytest.raises(sim.SimError, match="No simulated env"):
        sim.task_names("mujoco")


def test_an_env_whose_optional_extra_is_missing_says_how_to_install_it(monkeypatch):
    entry = registry.EnvEntry("openpi.sim._not_installed_env", "Env", "TASKS", extra="sim")
    monkeypatch.setitem(registry.ENVS, "optional", entry)
    with pytest.raises(sim.SimError, match=r"optional 'sim' extra.*uv sync --extra sim"):
        sim.task_names("optional")
    with pytest.raises(sim.SimError, match="uv sync --extra sim"):
        sim.make_env("optional", "anything")
