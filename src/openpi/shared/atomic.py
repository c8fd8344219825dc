"""Atomic file writes: a killed process never leaves a half-written file behind.

Every file a user cares about (norm stats, dataset metadata, value caches, reports, checkpoint sidecars) is
written to a hidden temporary sibling, flushed to disk, and renamed over the target. A rename within one
directory is atomic on POSIX file systems, so readers see either the old file or the complete new one.

`check_output_dir` is the other half: every job that writes an output directory calls it before its work starts,
so an output path that cannot be created is one sentence at once, not a traceback at the first write.
"""

from collections.abc import Iterator
import contextlib
import os
import pathlib
import tempfile
from typing import IO

from openpi.shared import errors


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


def check_output_dir(path: str | os.PathLike) -> pathlib.Path:
    """Refuses an output directory that cannot be created or written, before a job spends time on its output.

    Looks at the nearest part of `path` that exists (the path itself, or its closest existing ancestor): it must be
    a directory this user can write into. Nothing is created, so a job that refuses an existing output (datasets
    without --overwrite, runs without --resume) still sees it absent. Returns `path` as an absolute path.
    """
    path = pathlib.Path(path).expanduser().absolute()
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        why = f"{existing} is {'a file' if existing.is_file() else 'a broken link or special file'}, not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        why = f"{existing} is not writable by this user"
    else:
        return path
    raise errors.OutputError(f"Cannot write the output directory {path}: {why}; choose another output path.")
