"""`meta/recap.json`: where a dataset's RECAP labels came from, written beside LeRobot's own meta files.

Paper-mode labels are only comparable on one scale: `value_label = clip(G_t / L_task, -1, 0)` depends on the
per-task normaliser `L_task` and on the failure penalty `c_fail`, and the relabeller's advantages are sums of
those `reward_label`s. Nothing in the parquet columns says which `L_task` was used, so two datasets labelled on
different scales merge without complaint and train a value model on targets that disagree. Every dataset that
`add_recap_columns`, the relabeller or `merge_datasets` writes therefore records:

    {"version": 1,
     "label_scale": {"mode": "paper", "c_fail": null, "task_normaliser": {"<task>": 240, ...}},
     "relabel": {"value_checkpoint": {...}, "source": {...}, "lookahead": 50, "top_percent": 30.0,
                 "failure_reward": -1.0, "thresholds": {"<task>": -0.012}, "adv_col": "adv_ind"},   # relabel only
     "sources": [{"root": ..., "fingerprint": ..., "label_scale": ..., "relabel": ...}, ...]}           # merge only

`relabel.value_checkpoint` is `{"run", "step", "step_sha256", "frozen_sha256"}` (written by the training layer's
`value_checkpoint.fingerprint`): `step_sha256` hashes the step's restored arrays (names, dtypes, shapes, bytes in
sorted order) and its plain files, not Orbax's files, so two runs that trained identical weights record the same
digest (before issue 31 it hashed every file, whose Orbax metadata holds save timestamps).

`c_fail: null` means "the task's normaliser" (`labels.LabelConfig`); `label_scale: null` means unknown (the
labels were made by a tool that did not record it). Readers use it: the converter reuses a reference dataset's
normaliser, merge refuses datasets on different scales (or rescales them on request) and datasets whose value labels
are not what their recorded scale gives (`check_labels_on_scale`), and the relabel cache key
holds the source's content fingerprint.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import hashlib
import json
import pathlib
from typing import Any

from openpi.recap import labels
from openpi.shared import atomic
from openpi.shared import errors

RECAP_META_PATH = "meta/recap.json"
SCHEMA_VERSION = 1
# Video files are fingerprinted by size plus their first and last MiB: hashing whole videos of a large dataset
# would take minutes, and a re-encode or a different recording changes both ends and usually the size.
_VIDEO_SAMPLE_BYTES = 1 << 20


class ProvenanceError(errors.UserError, ValueError):
    """A dataset's recorded label provenance is missing, unreadable or contradicts what is asked."""


@dataclasses.dataclass(frozen=True)
class LabelScale:
    """What a value label means: the labelling mode, the failure penalty and (paper mode) the per-task normaliser."""

    mode: str
    c_fail: float | None
    task_normaliser: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "c_fail": self.c_fail,
            "task_normaliser": {k: int(v) for k, v in sorted(self.task_normaliser.items())},
        }

    @classmethod
    def from_json(cls, raw: Any, source: str) -> LabelScale | None:
        if raw is None:
            return None
        try:
            return cls(
                mode=str(raw["mode"]),
                c_fail=None if raw.get("c_fail") is None else float(raw["c_fail"]),
                task_normaliser={str(k): int(v) for k, v in (raw.get("task_normaliser") or {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProvenanceError(
                f"{source} has a malformed label_scale ({e!r}); restore the file or relabel the dataset."
            ) from e

    def describe(self) -> str:
        c_fail = "the task normaliser" if self.c_fail is None else f"{self.c_fail:g} steps"
        if self.mode != "paper":
            return f"{self.mode} labels"
        return f"paper labels, c_fail {c_fail}, normalisers {dict(sorted(self.task_normaliser.items()))}"


def meta_path(root: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(root) / RECAP_META_PATH


def read(root: str | pathlib.Path) -> dict[str, Any] | None:
    """The dataset's recap.json as a dict, or None when it has none."""
    path = meta_path(root)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ProvenanceError(f"{path} is unreadable ({e}); restore it or relabel the dataset.") from e
    if not isinstance(raw, dict) or raw.get("version") != SCHEMA_VERSION:
        raise ProvenanceError(
            f"{path} is not a version-{SCHEMA_VERSION} RECAP provenance file; relabel the dataset with this version."
        )
    return raw


def read_label_scale(root: str | pathlib.Path) -> LabelScale | None:
    """The recorded label scale, or None when the dataset has no recap.json or records the scale as unknown."""
    raw = read(root)
    return None if raw is None else LabelScale.from_json(raw.get("label_scale"), str(meta_path(root)))


def write(root: str | pathlib.Path, meta: Mapping[str, Any]) -> pathlib.Path:
    """Writes `meta` (plus the schema version) to `<root>/meta/recap.json` atomically."""
    body = {"version": SCHEMA_VERSION, **meta}
    return atomic.write_text(meta_path(root), json.dumps(body, indent=2, sort_keys=True) + "\n")


def dataset_fingerprint(root: str | pathlib.Path) -> str:
    """sha256 over a dataset's content: every data and meta file in full (except recap.json), videos sampled.

    The same frames exported again give the same fingerprint wherever they live; changed frames, episodes,
    columns or videos give another one.
    """
    root = pathlib.Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == RECAP_META_PATH or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        size = path.stat().st_size
        digest.update(f"{rel}|{size}|".encode())
        with open(path, "rb") as f:
            if rel.startswith("videos/") and size > 2 * _VIDEO_SAMPLE_BYTES:
                digest.update(f.read(_VIDEO_SAMPLE_BYTES))
                f.seek(size - _VIDEO_SAMPLE_BYTES)
                digest.update(f.read())
            else:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()


def check_same_scale(scales: Mapping[str, LabelScale | None]) -> LabelScale | None:
    """The one label scale shared by datasets (root -> scale), or a `ProvenanceError` naming the first mismatch.

    Paper-mode normalisers must agree on every task the datasets share; a task only one of them has keeps its own.
    """
    items = list(scales.items())
    unknown = [root for root, scale in items if scale is None]
    if unknown:
        raise ProvenanceError(
            f"The label scale of {unknown[0]} is unknown (no label_scale in meta/recap.json), so its value labels "
            "cannot be checked against the others; relabel it with scripts/add_recap_columns.py, merge with "
            "--rescale-labels to recompute every dataset's labels on one scale, or pass "
            "--allow-unrecorded-label-scale to merge the labels as they are (the result records its scale as unknown)."
        )
    if not items:
        return None
    first_root, first = items[0]
    normaliser = dict(first.task_normaliser)
    for root, scale in items[1:]:
        if (scale.mode, scale.c_fail) != (first.mode, first.c_fail):
            raise ProvenanceError(
                f"{root} has {scale.describe()} but {first_root} has {first.describe()}; relabel them in one mode "
                "and with one c_fail (scripts/add_recap_columns.py --overwrite-columns) before merging."
            )
        for task, length in scale.task_normaliser.items():
            if task in normaliser and normaliser[task] != length:
                raise ProvenanceError(
                    f"Task {task!r} is normalised by {length} frames in {root} but by {normaliser[task]} in "
                    f"{first_root}, so their value labels are on different scales; merge with --rescale-labels to "
                    "recompute them on one scale (the longer normaliser)."
                )
            normaliser.setdefault(task, length)
    return LabelScale(mode=first.mode, c_fail=first.c_fail, task_normaliser=normaliser)


LABEL_COLUMNS = ("reward_label", "value_label", "value_lable")


def has_labels(ds: Any) -> bool:
    """Whether a dataset carries RECAP value labels (whose scale then matters when merging)."""
    return any(ds.has_column(c) for c in LABEL_COLUMNS[:2])


def merged_label_scale(datasets: Any, *, rescale: bool, allow_unrecorded: bool = False) -> LabelScale | None:
    """The label scale of the merge of `datasets` (None when none carries labels, or, with `allow_unrecorded`,
    when some labelled dataset does not record its scale: then nothing can be checked and none is claimed).

    Without `rescale` the datasets must already share one scale (`check_same_scale`). With it, labels are to be
    recomputed (`rescaled_columns`) on a common scale: each task normalised by the longest of its recorded
    normalisers and of its episodes in any dataset. The mode and c_fail must still agree among the datasets
    that record them (rescaling changes the normaliser only); unrecorded ones take those values. Either way a
    recorded normaliser entry for a task its dataset does not have is refused (`check_no_foreign_tasks`).
    """
    labelled = [ds for ds in datasets if has_labels(ds)]
    if not labelled:
        return None
    scales = {str(ds.root): read_label_scale(ds.root) for ds in labelled}
    if not rescale:
        for ds in labelled:
            if scales[str(ds.root)] is not None:
                check_labels_on_scale(ds, scales[str(ds.root)])
        if allow_unrecorded and any(s is None for s in scales.values()):
            return None
        return check_same_scale(scales)
    known = [s for s in scales.values() if s is not None]
    modes = {(s.mode, s.c_fail) for s in known}
    if len(modes) > 1:
        raise ProvenanceError(
            f"The datasets were labelled in different modes or with different c_fail ({sorted(modes, key=str)}); "
            "--rescale-labels only unifies the normaliser: relabel them in one mode first "
            "(scripts/add_recap_columns.py --overwrite-columns)."
        )
    mode, c_fail = modes.pop() if modes else ("paper", None)
    normaliser: dict[str, int] = {}
    if mode == "paper":
        fix = "relabel the dataset (scripts/add_recap_columns.py --overwrite-columns)"
        for ds in labelled:
            if scales[str(ds.root)] is not None:
                check_no_foreign_tasks(ds, scales[str(ds.root)], fix=fix)
        for scale in known:
            for task, length in scale.task_normaliser.items():
                normaliser[task] = max(normaliser.get(task, 0), int(length))
        for ds in datasets:
            for task, length in labels.task_max_lengths(ds).items():
                normaliser[task] = max(normaliser.get(task, 0), int(length))
    return LabelScale(mode=mode, c_fail=c_fail, task_normaliser=normaliser)


def check_normaliser_recorded(ds: Any, scale: LabelScale, *, fix: str) -> None:
    """Refuses a paper-mode scale without a normaliser for every task of `ds` (empty, missing or incomplete): the
    scale of its value labels is then unknown. `fix` ends the sentence (what to do).

    An entry for a task no episode of `ds` has is refused too: nothing in the dataset can confirm it, yet a merge
    would copy it into the merged recap.json (and `--rescale-labels` would stretch that task's labels to it), so
    the file was edited or belongs to another dataset.
    """
    if scale.mode != "paper":
        return
    path = meta_path(ds.root)
    if not scale.task_normaliser:
        raise ProvenanceError(
            f"{path} records paper-mode labels but no task_normaliser (empty or missing), so the scale of its "
            f"value labels is unknown; {fix}."
        )
    tasks = set(labels.episode_tasks(ds))
    missing = sorted(tasks - set(scale.task_normaliser))
    if missing:
        raise ProvenanceError(
            f"{path} records paper-mode labels but no task_normaliser entry for task {missing[0]!r}, so the "
            f"scale of its value labels is unknown; {fix}."
        )
    check_no_foreign_tasks(ds, scale, fix=fix, tasks=tasks)


def check_no_foreign_tasks(ds: Any, scale: LabelScale, *, fix: str, tasks: set[str] | None = None) -> None:
    """Refuses a normaliser entry for a task that no episode of `ds` has (see `check_normaliser_recorded`)."""
    tasks = set(labels.episode_tasks(ds)) if tasks is None else tasks
    foreign = sorted(set(scale.task_normaliser) - tasks)
    if foreign:
        raise ProvenanceError(
            f"{meta_path(ds.root)} has a task_normaliser entry for task {foreign[0]!r}, which no episode of "
            f"{ds.root} has, so the file was edited or belongs to another dataset; remove the entry from that file "
            f"or {fix}."
        )


def check_labels_on_scale(ds: Any, scale: LabelScale) -> None:
    """Refuses a dataset whose `value_label` column is not what its recorded `scale` gives, naming the episode.

    The labels are a function of each episode's length, outcome and task and of the scale, so they are recomputed
    (`rescaled_columns`) and compared frame by frame: a recap.json whose normaliser was edited, or labels changed
    after it was written, would otherwise merge under a scale that a share of the episodes does not carry. A
    paper-mode scale without a normaliser for every task of the dataset cannot be checked, and is refused too.
    """
    import numpy as np

    path = meta_path(ds.root)
    fix = "relabel the dataset (scripts/add_recap_columns.py --overwrite-columns) or merge with --rescale-labels"
    check_normaliser_recorded(ds, scale, fix=fix)
    column = next((c for c in LABEL_COLUMNS[1:] if ds.has_column(c)), None)
    if column is None:
        return
    try:
        expected = rescaled_columns(ds, scale)["value_label"]
    except errors.UserError as e:
        raise ProvenanceError(f"{path} records a label scale its episodes cannot have ({e}); {fix}.") from e
    actual = np.asarray(ds.column(column), np.float64).reshape(ds.num_frames, -1)[:, 0]
    bad = np.flatnonzero(~np.isclose(actual, expected, rtol=0.0, atol=1e-5))
    if len(bad):
        i = int(bad[0])
        ep = ds.episode_for_frame(i)
        raise ProvenanceError(
            f"The {column} of episode {ep.episode_index} in {ds.root} does not match the scale its {RECAP_META_PATH} "
            f"records ({scale.describe()}): {actual[i]:g} at frame {i - ep.from_index} where that scale gives "
            f"{expected[i]:g} ({len(bad)} frames differ); the file or the labels were edited, so {fix}."
        )


def rescaled_columns(ds: Any, scale: LabelScale) -> dict[str, Any]:
    """`reward_label` and `value_label` of `ds` recomputed on `scale` from the facts its RECAP columns hold.

    The facts are the episode outcomes (`reward` is 1 on the last frame of a success), the `intervention` flags
    and each episode's task; `adv_ind` is left as it is (its thresholds are per task and relative).
    """
    import numpy as np

    for column in ("reward", "intervention"):
        if not ds.has_column(column):
            raise ProvenanceError(
                f"{ds.root} has no {column!r} column, so its labels cannot be recomputed on one scale; add the RECAP "
                "columns with scripts/add_recap_columns.py first."
            )
    reward = np.asarray(ds.column("reward"), np.float64).reshape(ds.num_frames, -1)[:, 0]
    success = np.asarray([reward[ep.to_index - 1] > 0 for ep in ds.episodes], bool)
    intervention = np.asarray(ds.column("intervention")).reshape(ds.num_frames, -1)[:, 0].astype(np.int64)
    columns = labels.compute_columns(
        episode_lengths=np.asarray([ep.length for ep in ds.episodes], np.int64),
        success=success,
        tasks=labels.episode_tasks(ds),
        intervention=intervention,
        config=labels.LabelConfig(mode=scale.mode, c_fail=scale.c_fail),
        task_max_length=dict(scale.task_normaliser) if scale.mode == "paper" else None,
    )
    out = {name: columns[name] for name in ("reward_label", "value_label")}
    if ds.has_column("value_lable"):  # the community's misspelt legacy copy must not keep the old scale
        out["value_lable"] = columns["value_label"]
    return out
