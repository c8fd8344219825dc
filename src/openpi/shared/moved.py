"""Module paths that moved to another package: importing the old one fails with one sentence naming the new home.

Packages are layered (CONTRIBUTING.md), so a module that moved up a layer cannot be re-exported from its old
package without an upward import. Instead the old package calls `install` with a table of its moved modules:
`from <package> import <old>`, `import <package>.<old>` and `<package>.<old>` then raise `MovedError` saying
where the module lives now, rather than a bare "No module named".
"""

from collections.abc import Callable
from collections.abc import Mapping
import importlib.abc
import sys
from typing import Any


class MovedError(ModuleNotFoundError):
    """An old module path was imported; the message names its new home."""


def _error(package: str, name: str, new: str) -> MovedError:
    return MovedError(f"{package}.{name} moved to {new}; import it from there.", name=f"{package}.{name}")


class _Finder(importlib.abc.MetaPathFinder):
    """Consulted last, so only for names no file provides: `import <package>.<old>` raises the pointer."""

    def __init__(self, package: str, moved: Mapping[str, str]):
        self.package = package
        self.moved = dict(moved)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        parent, _, name = fullname.rpartition(".")
        if parent == self.package and name in self.moved:
            raise _error(self.package, name, self.moved[name])
        return None


def install(package: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """Points `package`'s old submodule names (`moved`: old name -> new dotted path) to their new homes.

    Returns the package's module-level `__getattr__` (assign it in the package's `__init__`), which covers
    `from <package> import <old>`; a finder appended to `sys.meta_path` covers `import <package>.<old>`.
    """
    if not any(isinstance(f, _Finder) and f.package == package for f in sys.meta_path):
        sys.meta_path.append(_Finder(package, moved))

    def __getattr__(name: str) -> Any:
        if name in moved:
            raise _error(package, name, moved[name])
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
