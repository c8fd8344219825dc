"""The five per-frame RECAP columns as LeRobot features, and their validation on a dataset.

RECAP.md fixes the columns (`intervention`, `reward`, `reward_label`, `value_label`, `adv_ind`); a
dataset made by another tool may spell `value_label` as `value_lable`, which we read as the same column.
Relabelling and value training call `validate_recap_columns` before they start, and policy training runs the
same indicator check (`check_indicator_column`, through `training.data_loader.check_dataset`), so a bad
dataset fails in one sentence that names the column, the episode and the frame, not deep inside a
jitted step.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping

import numpy as np

from openpi.datasets import reader
from openpi.recap.vocab import ADV_IND
from openpi.recap.vocab import ADV_IND_VALUES
from openpi.recap.vocab import COLUMNS
from openpi.recap.vocab import INTERVENTION
from openpi.recap.vocab import LEGACY_NAMES
from openpi.recap.vocab import REWARD
from openpi.recap.vocab import REWARD_LABEL
from openpi.recap.vocab import VALUE_LABEL
from openpi.recap.vocab import is_indicator
from openpi.shared import errors

RECAP_FEATURES: dict[str, dict] = {
    INTERVENTION: {"dtype": "int64", "shape": [1], "names": None},
    REWARD: {"dtype": "float32", "shape": [1], "names": None},
    REWARD_LABEL: {"dtype": "float32", "shape": [1], "names": None},
    VALUE_LABEL: {"dtype": "float32", "shape": [1], "names": None},
    ADV_IND: {"dtype": "string", "shape": [1], "names": None},
}

_HINT = "run the RECAP labelling (openpi.recap.labels) on the dataset first"


def column_name(ds: reader.LeRobotDataset, name: str) -> str | None:
    """The column that holds RECAP column `name` in `ds` (its legacy spelling counts), or None."""
    for candidate in (name, *LEGACY_NAMES.get(name, ())):
        if ds.has_column(candidate):
            return candidate
    return None


def read_column(ds: reader.LeRobotDataset, name: str) -> np.ndarray:
    """A RECAP column over all frames ([N]; strings for adv_ind), under either spelling."""
    actual = column_name(ds, name)
    if actual is None:
        raise _missing(ds, name)
    return ds.column(actual).reshape(ds.num_frames)


def _missing(ds: reader.LeRobotDataset, name: str) -> errors.DatasetError:
    legacy = LEGACY_NAMES.get(name, ())
    also = f" (nor the legacy spelling {legacy[0]!r})" if legacy else ""
    return errors.DatasetError(f"Dataset {ds.root} has no RECAP column {name!r}{also}; {_HINT}.")


def _where(ds: reader.LeRobotDataset, i: int) -> str:
    episode = ds.episode_for_frame(i)
    return f"episode {episode.episode_index}, frame {i - episode.from_index} (index {i})"


def validate_recap_columns(ds: reader.LeRobotDataset, required: Iterable[str] = COLUMNS) -> Mapping[str, str]:
    """Checks that the required RECAP columns exist with valid values; returns {column: name on disk}.

    Rules: intervention is an integer 0/1; reward, reward_label and value_label are finite floats with
    value_label in [-1, 0]; adv_ind is one of positive / negative / none.
    """
    names: dict[str, str] = {}
    for name in required:
        if name not in RECAP_FEATURES:
            raise errors.ConfigError(f"{name!r} is not a RECAP column; the columns are {', '.join(COLUMNS)}.")
        actual = column_name(ds, name)
        if actual is None:
            raise _missing(ds, name)
        names[name] = actual
        values = ds.column(actual)
        if values.ndim != 1:
            raise errors.DatasetError(
                f"RECAP column {actual!r} of {ds.root} has shape {list(values.shape[1:])} per frame, expected [1]; "
                f"{_HINT}."
            )
        if name == ADV_IND:
            check_indicator_column(ds, actual)
        elif name == INTERVENTION:
            _check_intervention(ds, actual, values)
        else:
            _check_float(ds, actual, values, bounded=name == VALUE_LABEL)
    return names


def check_indicator_column(ds: reader.LeRobotDataset, actual: str = ADV_IND) -> None:
    """The one indicator check of policy training and relabelling: every cell is exactly positive / negative / none.

    A null cell (read as ""), NaN, "" or any other spelling is refused with its episode and frame: the tokenizer
    would read it as "no indicator" and train the unconditional prompt without a word. The rule is
    `openpi.recap.vocab.is_indicator`, the one the server applies to a request's `adv_ind`.
    """
    values = ds.column(actual).reshape(ds.num_frames)
    if values.dtype.kind != "U":
        raise errors.DatasetError(
            f"RECAP column {actual!r} of {ds.root} holds {values.dtype} values, expected strings "
            f"({', '.join(ADV_IND_VALUES)}); {_HINT}."
        )
    refused = [v for v in np.unique(values).tolist() if not is_indicator(v)]  # the rule once per distinct value
    bad = np.flatnonzero(np.isin(values, refused))
    if len(bad):
        i = int(bad[0])
        raise errors.DatasetError(
            f"RECAP column {actual!r} is {str(values[i])!r} at {_where(ds, i)} of {ds.root} ({len(bad)} bad frames); "
            f"it must be exactly one of {', '.join(ADV_IND_VALUES)}; relabel the dataset "
            "(scripts/label_advantage_from_vlm.py)."
        )


def check_indicator_cell(ds: reader.LeRobotDataset, index: int, value: object, actual: str = ADV_IND) -> None:
    """`check_indicator_column`'s rule on the one frame `index` just read (`value`: its cell, or a `[1]` array).

    What the policy's per-frame reading (`training.data_loader.read_frame`) runs, so a frame reaches the tokenizer
    only with a valid indicator even when nobody ran the whole-column check first (an item factory used directly).
    """
    cell = value
    if isinstance(cell, np.ndarray | list | tuple):
        flat = np.asarray(cell, dtype=object).reshape(-1)
        cell = flat[0] if flat.size == 1 else cell
    if not is_indicator(cell):
        raise errors.DatasetError(
            f"RECAP column {actual!r} is {cell!r} at {_where(ds, index)} of {ds.root}; it must be exactly one of "
            f"{', '.join(ADV_IND_VALUES)}; relabel the dataset (scripts/label_advantage_from_vlm.py)."
        )


def _check_intervention(ds, actual: str, values: np.ndarray) -> None:
    if not (np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_):
        raise errors.DatasetError(
            f"RECAP column {actual!r} of {ds.root} holds {values.dtype} values, expected int64 0/1 flags; {_HINT}."
        )
    bad = np.flatnonzero((values != 0) & (values != 1))
    if len(bad):
        i = int(bad[0])
        raise errors.DatasetError(
            f"RECAP column {actual!r} is {int(values[i])} at {_where(ds, i)} of {ds.root} ({len(bad)} bad frames); "
            "it must be 1 for human frames and 0 for autonomous ones."
        )


def _check_float(ds, actual: str, values: np.ndarray, *, bounded: bool) -> None:
    if not np.issubdtype(values.dtype, np.floating):
        raise errors.DatasetError(
            f"RECAP column {actual!r} of {ds.root} holds {values.dtype} values, expected float32; {_HINT}."
        )
    bad = ~np.isfinite(values)
    if bounded:
        bad |= (values < -1.0) | (values > 0.0)
    bad_idx = np.flatnonzero(bad)
    if len(bad_idx):
        i = int(bad_idx[0])
        rule = "a finite value in [-1, 0]" if bounded else "a finite value"
        raise errors.DatasetError(
            f"RECAP column {actual!r} is {float(values[i])} at {_where(ds, i)} of {ds.root} ({len(bad_idx)} bad "
            f"frames); it must be {rule}, recompute the labels (normalise by the task's max episode length and clip)."
        )
