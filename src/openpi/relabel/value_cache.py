"""The per-episode value cache that makes relabelling resumable and lets many processes share one run.

One .npz per episode (the frames it scores and their values) under `<cache_dir>/<key digest>/`, where the key hashes
the checkpoint, the dataset's content and everything else the values depend on. Files are written to a temp sibling
and renamed, so a killed process leaves either a complete episode or nothing; with several hosts the cache lives on
shared storage and each process writes only its own episodes.
"""

import hashlib
import json
import pathlib
from typing import Any
import zipfile

import numpy as np

from openpi.shared import atomic


class ValueCache:
    """Per-episode value files under `<cache_dir>/<key>/`, where key hashes the checkpoint and the dataset."""

    def __init__(self, root: pathlib.Path, key: dict[str, Any], *, clean_stale: bool = True):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = root / digest
        self.dir.mkdir(parents=True, exist_ok=True)
        if clean_stale:
            self.remove_stale_temps()
        meta = self.dir / "key.json"
        if not meta.exists():
            atomic.write_text(meta, json.dumps(key, indent=2, sort_keys=True))

    def remove_stale_temps(self) -> None:
        """Deletes temp files of a process killed mid-write (SIGKILL cannot clean up). Only safe while no other
        process writes to this cache (a single process, or process 0 after the barrier)."""
        for stale in self.dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def path(self, episode_id: int) -> pathlib.Path:
        return self.dir / f"episode_{episode_id:06d}.npz"

    def load(self, episode_id: int, frames: np.ndarray) -> np.ndarray | None:
        """Cached values of `frames` (global indices) or None when absent or made for other frames."""
        path = self.path(episode_id)
        if not path.exists():
            return None
        try:
            with np.load(path) as z:
                if np.array_equal(z["frames"], frames):
                    return z["values"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            return None  # unreadable (truncated by another tool, disk full): recompute it
        return None

    def save(self, episode_id: int, frames: np.ndarray, values: np.ndarray) -> None:
        with atomic.atomic_open(self.path(episode_id), "wb") as f:
            np.savez(f, frames=frames, values=np.asarray(values, np.float32))
