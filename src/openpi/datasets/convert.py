"""Stage 1 of the RECAP loop: give an existing LeRobot dataset of robot rollouts the five RECAP columns.

A user who recorded DAgger rollouts on their own robot has, per frame, a flag saying whether a human drove
(often called `intervention`), and per episode an outcome (a `success`/`reward` column on the last frame,
a spreadsheet kept by the operator, or nothing at all for pure demonstrations). RECAP needs those facts as
five columns (RECAP.md: `intervention`, `reward`, `reward_label`, `value_label`, `adv_ind`). This module
reads the facts from the dataset (v2.0, v2.1 or v3.0), labels every frame with `openpi.recap.labels`
(one labelling code for the whole project) and writes a NEW dataset with `copy_with_columns`: the
source's bytes are never touched, videos are hard-linked (never symlinked), and the copy is staged in a
hidden sibling and renamed into place, so a killed run leaves nothing half-written.

    result = convert.add_recap_columns("/data/yam_rollouts", "/data/yam_rollouts_recap", convert.ConvertConfig())
    print(convert.format_summary(result.summary))
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
import csv
import dataclasses
import json
import os
import pathlib
from typing import Any

import numpy as np

from openpi.datasets import lerobot
from openpi.datasets import recap_columns
from openpi.recap import labels as labels_lib
from openpi.recap import provenance
from openpi.shared import atomic
from openpi.shared import errors

# Columns whose last-frame value says whether an episode succeeded, tried in this order when the user names
# none. `reward` is RECAP's own sparse success reward (1 on the last frame of a success).
SUCCESS_COLUMN_CANDIDATES = ("success", "next.success", "is_success", "reward", "next.reward")

# RECAP columns this converter computes; their presence means the dataset was already labelled.
_LEGACY_VALUE_LABELS = recap_columns.LEGACY_NAMES[labels_lib.VALUE_LABEL]
_LABEL_COLUMNS = (labels_lib.REWARD_LABEL, labels_lib.VALUE_LABEL, *_LEGACY_VALUE_LABELS, labels_lib.ADV_IND)

# Words a success file or a string success column may use for an outcome (compared lower-case, stripped).
_TRUE_WORDS = ("1", "1.0", "true", "yes", "y", "success", "succeeded", "ok")
_FALSE_WORDS = ("0", "0.0", "false", "no", "n", "failure", "failed", "fail")


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """Where the facts come from and how they become labels.

    Attributes:
        intervention_column: per-frame human flag (1/True = human drove the robot, 0/False = policy).
        demos: the dataset is all human demonstrations; every frame is a human frame and no intervention
            column is read.
        success_column: column whose value on each episode's last frame is the outcome (true / > 0 / a word
            such as "success" means success). ``None`` with no other source tries `SUCCESS_COLUMN_CANDIDATES`.
        success_file: JSON or CSV file mapping episode_index -> success (see `load_success_file`).
        all_success: every episode succeeded (typical for demonstrations).
        labels: labelling mode (paper / per_episode) and failure penalty.
        task_max_length: per-task length normaliser of an earlier dataset (`reference_label_scale`), so that a
            new batch of rollouts is labelled on the same value scale (paper mode). A task the mapping lacks uses
            its own longest episode; an episode longer than its task's normaliser is refused (its labels would
            not fit the scale: label the batch on its own scale and merge with rescaled labels instead).
        overwrite_columns: recompute RECAP columns the dataset already has (the source is still untouched).
    """

    intervention_column: str = labels_lib.INTERVENTION
    demos: bool = False
    success_column: str | None = None
    success_file: pathlib.Path | None = None
    all_success: bool = False
    labels: labels_lib.LabelConfig = dataclasses.field(default_factory=labels_lib.LabelConfig)
    task_max_length: Mapping[str, int] | None = None
    overwrite_columns: bool = False

    def __post_init__(self):
        given = [
            name
            for name, on in (
                ("--success-column", self.success_column is not None),
                ("--success-file", self.success_file is not None),
                ("--all-success", self.all_success),
            )
            if on
        ]
        if len(given) > 1:
            raise errors.ConfigError(
                f"Success is given twice ({' and '.join(given)}); pass only one source of episode outcomes."
            )


@dataclasses.dataclass(frozen=True)
class TaskSummary:
    """Outcome and human share of one task's episodes in the converted dataset."""

    task: str
    episodes: int
    successes: int
    frames: int
    human_frames: int
    max_length: int
    normaliser: int  # the length `value_label` is divided by in paper mode (>= max_length)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    @property
    def human_fraction(self) -> float:
        return self.human_frames / self.frames if self.frames else 0.0


@dataclasses.dataclass(frozen=True)
class Summary:
    """What the converter did, for the user to check before training on it."""

    root: pathlib.Path
    version: str
    mode: str
    success_source: str
    intervention_source: str
    tasks: tuple[TaskSummary, ...]
    replaced_columns: tuple[str, ...] = ()

    @property
    def episodes(self) -> int:
        return sum(t.episodes for t in self.tasks)

    @property
    def frames(self) -> int:
        return sum(t.frames for t in self.tasks)

    @property
    def success_rate(self) -> float:
        return sum(t.successes for t in self.tasks) / self.episodes if self.episodes else 0.0

    @property
    def human_fraction(self) -> float:
        return sum(t.human_frames for t in self.tasks) / self.frames if self.frames else 0.0


@dataclasses.dataclass(frozen=True)
class ConvertResult:
    dataset: lerobot.LeRobotDataset
    summary: Summary


# ------------------------------------------------------------------------------------------------ inputs


def read_intervention(ds: lerobot.LeRobotDataset, column: str = labels_lib.INTERVENTION, *, demos: bool = False):
    """Per-frame human flags ``[N]`` int64 (0/1) from `column`, or all ones for a demonstration dataset."""
    if demos:
        return np.ones(ds.num_frames, dtype=np.int64)
    if not ds.has_column(column):
        raise errors.DatasetError(
            f"Dataset {ds.root} has no intervention column {column!r} (columns: {', '.join(_plain_columns(ds))}); "
            "name the per-frame human flag with --intervention-column, or pass --demos if every frame is a human "
            "demonstration."
        )
    values = ds.column(column)
    if values.ndim != 1:
        raise errors.DatasetError(
            f"Intervention column {column!r} of {ds.root} has {values.shape[1]} values per frame; it must hold one "
            "0/1 flag per frame."
        )
    if values.dtype.kind not in "biuf":
        raise errors.DatasetError(
            f"Intervention column {column!r} of {ds.root} holds {values.dtype} values; it must hold 0/1 flags "
            "(1 = human drove the robot)."
        )
    bad = np.flatnonzero((values != 0) & (values != 1))
    if bad.size:
        raise errors.DatasetError(
            f"Intervention column {column!r} is {values[bad[0]].item()!r} at {_where(ds, int(bad[0]))} of {ds.root} "
            f"({bad.size} such frames); mark human frames 1 and autonomous frames 0."
        )
    return values.astype(np.int64)


def load_success_file(path: str | os.PathLike) -> dict[int, bool]:
    """Episode outcomes from a JSON or CSV file (by suffix), as {episode_index: success}.

    JSON: ``{"0": true, "1": false}`` or ``[{"episode_index": 0, "success": true}, ...]``. CSV: a header with
    ``episode_index`` and ``success`` columns. Outcomes may be booleans, 0/1, or words such as
    true/false, yes/no, success/failure.
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise errors.DatasetError(f"Success file {path} does not exist; pass the JSON or CSV file of episode outcomes.")
    suffix = path.suffix.lower()
    if suffix == ".json":
        pairs = _json_pairs(path)
    elif suffix == ".csv":
        pairs = _csv_pairs(path)
    else:
        raise errors.DatasetError(
            f"Success file {path} has suffix {path.suffix!r}; use a .json or .csv file mapping episode_index to success."
        )
    out: dict[int, bool] = {}
    for key, raw in pairs:
        episode = _episode_key(path, key)
        if episode in out:
            raise errors.DatasetError(
                f"Success file {path} lists episode {episode} twice; keep one outcome per episode."
            )
        out[episode] = _outcome(path, episode, raw)
    return out


def _json_pairs(path: pathlib.Path) -> list[tuple[Any, Any]]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise errors.DatasetError(f"Success file {path} is not valid JSON ({exc}); fix or regenerate it.") from exc
    if isinstance(data, dict):
        return list(data.items())
    if isinstance(data, list) and all(isinstance(r, dict) and {"episode_index", "success"} <= set(r) for r in data):
        return [(r["episode_index"], r["success"]) for r in data]
    raise errors.DatasetError(
        f'Success file {path} must hold an object {{"<episode_index>": true|false}} or a list of '
        '{"episode_index": ..., "success": ...} records.'
    )


def _csv_pairs(path: pathlib.Path) -> list[tuple[Any, Any]]:
    with open(path, newline="") as f:
        rows = csv.DictReader(f)
        fields = [name.strip() for name in rows.fieldnames or []]
        if not {"episode_index", "success"} <= set(fields):
            raise errors.DatasetError(
                f"Success file {path} has header {fields}; it needs the columns episode_index and success."
            )
        cleaned = [{(k or "").strip(): v for k, v in row.items()} for row in rows]
    return [(row["episode_index"], row["success"]) for row in cleaned]


def _episode_key(path: pathlib.Path, key: Any) -> int:
    text = str(key).strip()
    if isinstance(key, bool) or not text.lstrip("-").isdigit() or int(text) < 0:
        raise errors.DatasetError(
            f"Success file {path} has episode key {key!r}; episode keys must be non-negative episode_index integers."
        )
    return int(text)


def _outcome(path: pathlib.Path, episode: int, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float) and raw in (0, 1):
        return bool(raw)
    text = str(raw).strip().lower() if isinstance(raw, str) else None
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS:
        return False
    raise errors.DatasetError(
        f"Success file {path} gives episode {episode} the outcome {raw!r}; use true/false (or 1/0, success/failure)."
    )


def read_success(
    ds: lerobot.LeRobotDataset,
    *,
    column: str | None = None,
    file: str | os.PathLike | None = None,
    all_success: bool = False,
) -> tuple[np.ndarray, str]:
    """Per-episode outcomes ``[E]`` bool in dataset order, and a short description of where they came from."""
    if all_success:
        return np.ones(ds.num_episodes, dtype=bool), "--all-success"
    if file is not None:
        table = load_success_file(file)
        indices = [ep.episode_index for ep in ds.episodes]
        missing = [i for i in indices if i not in table]
        if missing:
            more = f" ({len(missing)} episodes lack an outcome)" if len(missing) > 1 else ""
            raise errors.DatasetError(
                f"Success file {file} has no outcome for episode {missing[0]} of {ds.root}{more}; add one entry per "
                "episode_index, or pass --all-success if every episode succeeded."
            )
        extra = sorted(set(table) - set(indices))
        if extra:
            raise errors.DatasetError(
                f"Success file {file} gives outcomes for episodes {extra[:5]} that {ds.root} does not have; it "
                "probably belongs to another dataset, check the episode numbering."
            )
        return np.asarray([table[i] for i in indices], dtype=bool), f"file {file}"
    if column is None:
        column = next((c for c in SUCCESS_COLUMN_CANDIDATES if ds.has_column(c)), None)
        if column is None:
            raise errors.DatasetError(
                f"Dataset {ds.root} has no success information (none of the columns "
                f"{', '.join(SUCCESS_COLUMN_CANDIDATES)}); pass --success-column, --success-file (JSON/CSV mapping "
                "episode_index to success) or --all-success."
            )
    elif not ds.has_column(column):
        raise errors.DatasetError(
            f"Dataset {ds.root} has no success column {column!r} (columns: {', '.join(_plain_columns(ds))}); name "
            "an existing column, or pass --success-file or --all-success."
        )
    values = ds.column(column)
    if values.ndim != 1 or values.dtype.kind not in "biufU":
        raise errors.DatasetError(
            f"Success column {column!r} of {ds.root} holds {values.dtype} values of shape {list(values.shape[1:])} per "
            "frame; it needs one number, boolean or word (success/failure) per frame, read on each episode's last frame."
        )
    last_frames = np.asarray([ep.to_index - 1 for ep in ds.episodes], dtype=np.int64)
    if values.dtype.kind == "U":
        return _word_outcomes(ds, column, values[last_frames]), f"column {column!r} (last frame)"
    last = values[last_frames].astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(last))
    if bad.size:
        ep = ds.episodes[int(bad[0])]
        raise errors.DatasetError(
            f"Success column {column!r} is {last[bad[0]]} on the last frame of episode {ep.episode_index} of "
            f"{ds.root}, so its outcome is unknown; fix that value or give outcomes with --success-file."
        )
    return last > 0, f"column {column!r} (last frame > 0)"


def _word_outcomes(ds: lerobot.LeRobotDataset, column: str, words: np.ndarray) -> np.ndarray:
    """Outcomes from a string column's last-frame words (success/failure, true/false, ...)."""
    out = np.zeros(len(words), dtype=bool)
    for i, word in enumerate(words.tolist()):
        text = word.strip().lower()
        if text not in _TRUE_WORDS + _FALSE_WORDS:
            raise errors.DatasetError(
                f"Success column {column!r} is {word!r} on the last frame of episode {ds.episodes[i].episode_index} "
                f"of {ds.root}, so its outcome is unknown; use success/failure (or true/false) there, or give "
                "outcomes with --success-file."
            )
        out[i] = text in _TRUE_WORDS
    return out


# The task of each episode and the longest episode of each task are label facts: they live in
# `openpi.recap.labels`, where `provenance` (below the dataset layer) reads them too.
episode_tasks = labels_lib.episode_tasks
task_max_lengths = labels_lib.task_max_lengths


def reference_label_scale(root: str | os.PathLike, c_fail: float | None) -> provenance.LabelScale:
    """The label scale recorded in an earlier RECAP dataset (its meta/recap.json), to label a new batch on it.

    The normaliser that was actually used, not the reference's longest episodes (the two differ when the
    reference itself was labelled on an older scale). `c_fail` (the new batch's, None = not given) must agree.
    """
    ds = lerobot.LeRobotDataset.open(root)
    scale = provenance.read_label_scale(ds.root)
    if scale is None:
        raise provenance.ProvenanceError(
            f"{ds.root} records no label scale (no {provenance.RECAP_META_PATH}), so the normaliser its labels used "
            "is unknown; relabel it with scripts/add_recap_columns.py first, or drop --task-max-length-from."
        )
    if scale.mode != "paper":
        raise provenance.ProvenanceError(
            f"{ds.root} has {scale.mode} labels, which have no per-task normaliser; --task-max-length-from needs a "
            "paper-mode reference."
        )
    if c_fail is not None and c_fail != scale.c_fail:
        raise provenance.ProvenanceError(
            f"--c-fail {c_fail:g} differs from the reference's c_fail ({scale.describe()}); drop --c-fail to use the "
            "reference's, so both batches share one value scale."
        )
    # An empty normaliser would silently label the batch on its own scale instead of the reference's.
    provenance.check_normaliser_recorded(
        ds, scale, fix="relabel the reference with scripts/add_recap_columns.py, or drop --task-max-length-from"
    )
    return scale


# ------------------------------------------------------------------------------------------------ labelling


def compute_recap_columns(
    ds: lerobot.LeRobotDataset, config: ConvertConfig = ConvertConfig()
) -> tuple[dict[str, np.ndarray], Summary]:
    """The five RECAP columns ``[N]`` for every frame of `ds`, and the summary of the facts they came from."""
    intervention = read_intervention(ds, config.intervention_column, demos=config.demos)
    success, success_source = read_success(
        ds, column=config.success_column, file=config.success_file, all_success=config.all_success
    )
    tasks = episode_tasks(ds)
    lengths = np.asarray([ep.length for ep in ds.episodes], dtype=np.int64)
    normaliser = task_max_lengths(ds)
    for task, length in (config.task_max_length or {}).items():
        length = _positive_length(task, length)
        if task in normaliser and config.labels.mode == "paper":
            if normaliser[task] > length:
                raise provenance.ProvenanceError(
                    f"Task {task!r} has an episode of {normaliser[task]} frames in {ds.root}, longer than the "
                    f"normaliser {length} of the reference labels, so its values would not fit that scale; label "
                    "this batch on its own scale (drop --task-max-length-from) and merge the iterations with "
                    "scripts/merge_datasets.py --rescale-labels."
                )
            normaliser[task] = length
    columns = labels_lib.compute_columns(
        episode_lengths=lengths,
        success=success,
        tasks=tasks,
        intervention=intervention,
        config=config.labels,
        task_max_length=normaliser,
    )
    replaced = _existing_columns(ds, columns)
    if replaced and not config.overwrite_columns:
        raise errors.DatasetError(
            f"Dataset {ds.root} already has RECAP columns that this conversion would replace ({', '.join(replaced)}); "
            "pass --overwrite-columns to recompute them in the new dataset (the source stays untouched), or train on "
            "the dataset as it is."
        )
    # A legacy `value_lable` column is rewritten too, so no stale copy of the old labels survives.
    for legacy in _LEGACY_VALUE_LABELS:
        if ds.has_column(legacy):
            columns[legacy] = columns[labels_lib.VALUE_LABEL]
    summary = Summary(
        root=ds.root,
        version=ds.version,
        mode=config.labels.mode,
        success_source=success_source,
        intervention_source="--demos (all human)" if config.demos else f"column {config.intervention_column!r}",
        tasks=_task_summaries(lengths, success, tasks, intervention, normaliser),
        replaced_columns=tuple(replaced),
    )
    return columns, summary


def _existing_columns(ds: lerobot.LeRobotDataset, columns: Mapping[str, np.ndarray]) -> list[str]:
    """RECAP columns of `ds` that the conversion would change: any label column, and differing flags/rewards."""
    found = [name for name in _LABEL_COLUMNS if ds.has_column(name)]
    for name in (labels_lib.INTERVENTION, labels_lib.REWARD):
        if ds.has_column(name):
            old = ds.column(name)
            same = old.shape == columns[name].shape and old.dtype.kind in "biuf" and np.array_equal(old, columns[name])
            if not same:
                found.append(name)
    return found


def _positive_length(task: str, length: Any) -> int:
    if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 1:
        raise errors.ConfigError(
            f"task_max_length gives task {task!r} the length {length!r}; pass a positive number of frames per task."
        )
    return int(length)


def _task_summaries(
    lengths, success, tasks: Sequence[str], intervention: np.ndarray, normaliser: Mapping[str, int]
) -> tuple[TaskSummary, ...]:
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    human = np.add.reduceat(intervention, starts) if len(lengths) else np.zeros(0, np.int64)
    by_task: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        by_task.setdefault(task, []).append(i)
    return tuple(
        TaskSummary(
            task=task,
            episodes=len(mine),
            successes=int(success[mine].sum()),
            frames=int(lengths[mine].sum()),
            human_frames=int(human[mine].sum()),
            max_length=int(lengths[mine].max()),
            normaliser=int(normaliser[task]),
        )
        for task, mine in by_task.items()
    )


def add_recap_columns(
    src: str | os.PathLike | lerobot.LeRobotDataset,
    dst: str | os.PathLike,
    config: ConvertConfig = ConvertConfig(),
    *,
    overwrite: bool = False,
    link_videos: bool = True,
) -> ConvertResult:
    """Writes `src` with the five RECAP columns to the new dataset `dst`; returns it opened, with a summary.

    Refuses an existing `dst` unless `overwrite` (which replaces it atomically). The new columns are
    validated by `validate_recap_columns` on the written dataset before returning.
    """
    dst_root = atomic.check_output_dir(dst)  # before the labels are computed
    if dst_root.exists() and not overwrite:
        raise errors.DatasetError(
            f"Output directory {dst_root} already exists; choose a new --output-dir, or pass --overwrite to replace it."
        )
    ds = src if isinstance(src, lerobot.LeRobotDataset) else lerobot.LeRobotDataset.open(src)
    if ds.num_episodes == 0:
        raise errors.DatasetError(f"Dataset {ds.root} has no episodes; there is nothing to label.")
    columns, summary = compute_recap_columns(ds, config)
    features = {
        name: dict(recap_columns.RECAP_FEATURES.get(name) or recap_columns.RECAP_FEATURES[labels_lib.VALUE_LABEL])
        for name in columns
    }
    out = lerobot.copy_with_columns(
        ds, dst_root, columns, features_update=features, link_videos=link_videos, overwrite=overwrite
    )
    recap_columns.validate_recap_columns(out)
    normaliser = {t.task: t.normaliser for t in summary.tasks} if config.labels.mode == "paper" else {}
    scale = provenance.LabelScale(mode=config.labels.mode, c_fail=config.labels.c_fail, task_normaliser=normaliser)
    provenance.write(out.root, {"label_scale": scale.to_json(), "converted_from": str(ds.root)})
    return ConvertResult(dataset=out, summary=dataclasses.replace(summary, root=out.root))


# ------------------------------------------------------------------------------------------------ report


def format_summary(summary: Summary) -> str:
    """A small table: per task, episodes, success rate, frames, human-frame fraction, max length (and normaliser)."""
    width = max([len("task"), len("all"), *(len(t.task) for t in summary.tasks)])
    # The normaliser column only appears when it differs from the max length (--task-max-length-from).
    show_norm = summary.mode == "paper" and any(t.normaliser != t.max_length for t in summary.tasks)
    norm_head = f"  {'norm_len':>8}" if show_norm else ""
    header = (
        f"{'task':<{width}}  {'episodes':>8}  {'success':>7}  {'frames':>7}  {'human':>6}  {'max_len':>7}{norm_head}"
    )
    lines = [
        f"{summary.root} ({summary.version}, {summary.mode} labels)",
        f"success from {summary.success_source}; interventions from {summary.intervention_source}",
    ]
    if summary.replaced_columns:
        lines.append(f"recomputed existing columns: {', '.join(summary.replaced_columns)}")
    lines += [header, "-" * len(header)]
    for t in summary.tasks:
        norm = f"  {t.normaliser:>8}" if show_norm else ""
        lines.append(
            f"{t.task:<{width}}  {t.episodes:>8}  {t.success_rate:>7.1%}  {t.frames:>7}  {t.human_fraction:>6.1%}  "
            f"{t.max_length:>7}{norm}"
        )
    max_len = max((t.max_length for t in summary.tasks), default=0)
    lines.append(
        f"{'all':<{width}}  {summary.episodes:>8}  {summary.success_rate:>7.1%}  {summary.frames:>7}  "
        f"{summary.human_fraction:>6.1%}  {max_len:>7}"
    )
    return "\n".join(lines)


def _plain_columns(ds: lerobot.LeRobotDataset) -> list[str]:
    return [name for name in ds.features if ds.has_column(name) and name not in lerobot.DEFAULT_FEATURES]


def _where(ds: lerobot.LeRobotDataset, i: int) -> str:
    episode = ds.episode_for_frame(i)
    return f"episode {episode.episode_index}, frame {i - episode.from_index}"
