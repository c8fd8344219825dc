"""Atomic file writes: a killed process never leaves a half-written file behind.

Every file a user cares about (norm stats, dataset metadata, value caches, reports, checkpoint sidecars) is
written to a hidden temporary sibling, flushed to disk, and renamed over the target. A rename within one
directory is atomic on POSIX file systems, so readers see either the old file or the complete new one.
"""

from collections.abc import Iterator
import contextlib
import os
import pathlib
import tempfile
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Opens a temporary sibling of `path` for writing; on a clean exit it is fsynced and renamed onto `path`."""
    if "w" not in mode:
        raise ValueError(f"atomic_open writes whole files; mode must contain 'w', got {mode!r}.")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return pathlib.Path(path)


def write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return pathlib.Path(path)
