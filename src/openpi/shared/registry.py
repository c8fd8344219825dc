"""Named-config registries (training configs, value configs): unique names and a "did you mean" lookup."""

from collections.abc import Sequence
import difflib
from typing import Protocol
from typing import TypeVar

from openpi.shared import errors


class _Named(Protocol):
    name: str


T = TypeVar("T", bound=_Named)


def build(configs: Sequence[T], kind: str) -> dict[str, T]:
    """Name -> config; a duplicated name is a programming error caught at import time."""
    registry = {config.name: config for config in configs}
    if len(registry) != len(configs):
        raise RuntimeError(f"Duplicate {kind} names in the registry.")
    return registry


def lookup(registry: dict[str, T], name: str, kind: str) -> T:
    """The config `name`; an unknown name raises ConfigError suggesting the closest ones."""
    if name not in registry:
        close = difflib.get_close_matches(name, registry, n=3, cutoff=0.0)
        raise errors.ConfigError(
            f"No {kind} named {name!r}; did you mean {' or '.join(repr(c) for c in close)}? "
            f"(all names: {', '.join(registry)})"
        )
    return registry[name]
