import importlib
import re
import sys

import pytest

from openpi.shared import moved


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A real package on disk whose `old` module moved to `somewhere.new` (and `here` stayed)."""
    root = tmp_path / "moved_pkg"
    root.mkdir()
    (root / "__init__.py").write_text(
        "from openpi.shared import moved\n__getattr__ = moved.install(__name__, {'old': 'somewhere.new'})\n"
    )
    (root / "here.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "moved_pkg"
    for name in [n for n in sys.modules if n == "moved_pkg" or n.startswith("moved_pkg.")]:
        del sys.modules[name]
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if getattr(f, "package", None) != "moved_pkg"])


def test_every_spelling_of_the_old_path_names_the_new_home(package):
    message = re.escape("moved_pkg.old moved to somewhere.new; import it from there.")
    with pytest.raises(moved.MovedError, match=message):
        exec("from moved_pkg import old")
    with pytest.raises(moved.MovedError, match=message):
        importlib.import_module("moved_pkg.old")
    with pytest.raises(moved.MovedError, match=message):
        exec("from moved_pkg.old import anything")
    with pytest.raises(moved.MovedError, match=message):
        importlib.import_module("moved_pkg").old  # noqa: B018


def test_other_names_are_untouched(package):
    assert importlib.import_module("moved_pkg.here").VALUE == 1
    with pytest.raises(ModuleNotFoundError, match=re.escape("No module named 'moved_pkg.nothing'")) as info:
        importlib.import_module("moved_pkg.nothing")
    assert not isinstance(info.value, moved.MovedError)
    assert not hasattr(importlib.import_module("moved_pkg"), "nothing")


def test_installing_twice_adds_one_finder(package):
    importlib.import_module("moved_pkg")
    moved.install("moved_pkg", {"old": "somewhere.new"})
    assert sum(getattr(f, "package", None) == "moved_pkg" for f in sys.meta_path) == 1
