"""Where a training run's initial weights come from.

A `TrainConfig` names one loader. The trainer builds the model's parameter tree (arrays, or
`jax.ShapeDtypeStruct`s from `jax.eval_shape`), hands it to `load`, and gets back a tree of exactly that
structure, shapes and dtypes. Loaders follow openpi's merge rule: keep only what the model has, cast to
the model's dtype, and take the few paths the checkpoint may lack (the LoRA adapters when fine-tuning a
base checkpoint with LoRA; everything outside PaliGemma for the PaliGemma loader) from the model's own
fresh initialisation. Anything else missing, or any shape that differs, is an error naming the path.
"""

import dataclasses
import logging
import os
import re
from typing import Protocol
from typing import runtime_checkable
import zipfile

import numpy as np

from openpi.models import params_io
from openpi.shared import download
from openpi.shared import errors

logger = logging.getLogger(__name__)

Params = dict

# Paths (joined with "/") that a checkpoint may lack and that are then kept from the model's initialisation.
LORA_REGEX = ".*lora.*"
PALIGEMMA_NPZ_URL = "gs://vertex-model-garden-paligemma-us/paligemma/pt_224.npz"


@runtime_checkable
class WeightLoader(Protocol):
    def load(self, params: Params) -> Params:
        """Returns weights with the structure, shapes and dtypes of `params` (the model's fresh parameters)."""


def validate(loader: WeightLoader) -> None:
    """Fails fast, before anything compiles, when a loader's weight file is missing or of the wrong kind.

    Cheap: checks the location and layout markers only; loaders without a `validate` method pass.
    """
    check = getattr(loader, "validate", None)
    if callable(check):
        check()


@dataclasses.dataclass(frozen=True)
class NoOpWeightLoader:
    """Trains from the model's random initialisation (toy configs, tests)."""

    def load(self, params: Params) -> Params:
        logger.warning("No weights loaded: training from scratch.")
        return params


def merge_params(loaded: Params, params: Params, *, missing_regex: str) -> Params:
    """openpi's merge: loaded leaves the model has (cast to its dtype), plus model leaves matching `missing_regex`.

    Loaded leaves the model lacks are dropped (and logged). Model paths that the checkpoint lacks and that
    fully match `missing_regex` keep the model's value; other gaps stay gaps for `check_tree_matches` to report.
    """
    flat_ref = params_io.flatten(params)
    flat_loaded = params_io.flatten(loaded)
    merged: dict[str, object] = {}
    dropped = []
    for path, value in flat_loaded.items():
        ref = flat_ref.get(path)
        if ref is None:
            dropped.append(path)
            continue
        value = np.asarray(value) if not hasattr(value, "astype") else value
        merged[path] = value if np.dtype(value.dtype) == np.dtype(ref.dtype) else value.astype(ref.dtype)
    flat_loaded.clear()  # the loaded tree can be gigabytes; do not keep two references alive
    if dropped:
        logger.info("Ignoring %d checkpoint weights the model does not have, e.g. %s", len(dropped), dropped[:3])
    pattern = re.compile(missing_regex)
    kept = [p for p in flat_ref if p not in merged and pattern.fullmatch(p)]
    for path in kept:
        merged[path] = flat_ref[path]
    if kept:
        logger.info("Keeping %d freshly initialised weights the checkpoint lacks, e.g. %s", len(kept), kept[:3])
    return params_io.unflatten(merged)


@dataclasses.dataclass(frozen=True)
class CheckpointWeightLoader:
    """Loads an openpi params checkpoint: a released one (`gs://openpi-assets/checkpoints/<name>/params`, once
    cached) or a training run's `<checkpoint_dir>/<step>/params`. LoRA adapters missing from it start fresh.

    When `params` holds `jax.ShapeDtypeStruct`s, those LoRA leaves come back as ShapeDtypeStructs for the
    trainer to initialise.
    """

    params_path: str

    def validate(self) -> None:
        params_io.locate_checkpoint(self.params_path)

    def load(self, params: Params) -> Params:
        loaded = params_io.restore_params(self.params_path, restore_type=np.ndarray)
        merged = merge_params(loaded, params, missing_regex=LORA_REGEX)
        params_io.check_tree_matches(params, merged, what=f"checkpoint {self.params_path}")
        return merged


@dataclasses.dataclass(frozen=True)
class PaliGemmaWeightLoader:
    """Loads big_vision's PaliGemma `.npz` (e.g. `pt_224.npz`) into `PaliGemma/`; all else stays as initialised.

    The npz holds one array per leaf keyed "params/<path>" with "/" separators. This is how openpi starts
    pi0 from the vision-language model alone.
    """

    npz_path: str = PALIGEMMA_NPZ_URL

    def validate(self) -> None:
        path = self._locate()
        if not zipfile.is_zipfile(path):
            raise errors.CheckpointError(f"{path} is not an .npz archive; is the download complete?")

    def _locate(self):
        try:
            return download.maybe_download(self.npz_path)
        except download.ArtefactNotFoundError as e:
            raise errors.CheckpointError(f"PaliGemma weights not found: {e}") from e

    def load(self, params: Params) -> Params:
        path = self._locate()
        flat = _read_npz(path)
        prefix = f"{params_io.PARAMS_ITEM}/"
        if not flat or not all(k.startswith(prefix) for k in flat):
            odd = next((k for k in flat if not k.startswith(prefix)), "<no arrays>")
            raise errors.CheckpointError(
                f"{path} is not a big_vision PaliGemma npz: key {odd!r} does not start with {prefix!r}."
            )
        loaded = {"PaliGemma": params_io.unflatten({k[len(prefix) :]: v for k, v in flat.items()})}
        merged = merge_params(loaded, params, missing_regex=".*")
        params_io.check_tree_matches(params, merged, what=f"PaliGemma npz {path}")
        return merged


def _read_npz(path: os.PathLike) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise errors.CheckpointError(f"{path} holds a single array, not an .npz archive of named weights.")
        with archive:
            return {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, errors.UserError):
            raise
        raise errors.CheckpointError(f"Cannot read {path} as an .npz archive ({e}); is the download complete?") from e
