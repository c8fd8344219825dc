"""Pretrained weights for the value model: SigLIP from openpi or big_vision, Gemma3 from its Orbax release.

    img/ (all but `head`) <- `PaliGemma/img` of an openpi params checkpoint (every pi05_base user has one), or
                             the image tower of a big_vision SigLIP / PaliGemma `.npz` (`params/img/...`)
    llm/                  <- a Gemma3 Orbax checkpoint in the public layout (`gemma3.load_gemma3_params`)
    img/head, value_head  <- fresh: the projection into the Gemma3 width and the value MLP are new
    state_proj            <- fresh (only with `state_dim` > 0): the continuous state token is new

Each source is a configured path (flag or environment variable); `None` keeps the fresh initialisation. The
loader follows the `weight_loaders.WeightLoader` protocol: it returns a tree with exactly the structure, shapes and
dtypes of the model's parameters, and a missing file or mismatching shape is a `CheckpointError` naming it.
"""

import dataclasses
import logging
import os
import pathlib
import re

import numpy as np

from openpi.models import gemma3
from openpi.models import params_io
from openpi.shared import download
from openpi.shared import errors
from openpi.training import weight_loaders

logger = logging.getLogger(__name__)

SIGLIP_ENV = "OPENPI_VALUE_SIGLIP_PATH"
GEMMA3_ENV = "OPENPI_VALUE_GEMMA3_PATH"
# Where real users have these (resolved through the openpi cache, never downloaded here).
DEFAULT_SIGLIP_PATH = "gs://openpi-assets/checkpoints/pi05_base/params"
DEFAULT_GEMMA3_PATH = "gs://gemma-data/checkpoints/gemma3-270m-pt"

# SigLIP leaves that never come from a checkpoint: the projection into the Gemma3 width is new.
_FRESH_IMG = ("head",)
_FRESH_IMG_REGEX = "head/.*"


def _resolve(path: str, *, what: str, flag: str, env: str, kinds: str) -> pathlib.Path:
    try:
        return download.maybe_download(path)
    except download.ArtefactNotFoundError as e:
        raise errors.CheckpointError(
            f"{what} weights not found at {path} ({e}); set {flag} or ${env} to {kinds}, "
            "or pass --no-load-pretrained to train from scratch."
        ) from e


@dataclasses.dataclass(frozen=True)
class ValueWeightLoader:
    """Loads SigLIP and Gemma3 into a value model's params; `None` paths keep the fresh initialisation."""

    siglip_path: str | None = None
    gemma3_path: str | None = None

    @classmethod
    def from_env(cls, siglip_path: str | None = None, gemma3_path: str | None = None) -> "ValueWeightLoader":
        """Explicit paths win; else the environment variables; else openpi's cache locations of the releases."""
        return cls(
            siglip_path=siglip_path or os.environ.get(SIGLIP_ENV) or DEFAULT_SIGLIP_PATH,
            gemma3_path=gemma3_path or os.environ.get(GEMMA3_ENV) or DEFAULT_GEMMA3_PATH,
        )

    def _siglip(self) -> pathlib.Path:
        return _resolve(
            self.siglip_path,
            what="SigLIP",
            flag="--siglip-path",
            env=SIGLIP_ENV,
            kinds="an openpi params checkpoint (with PaliGemma/img) or a big_vision SigLIP .npz",
        )

    def _gemma3(self) -> pathlib.Path:
        return _resolve(
            self.gemma3_path,
            what="Gemma3",
            flag="--gemma3-path",
            env=GEMMA3_ENV,
            kinds="a Gemma3-270M Orbax checkpoint directory",
        )

    def validate(self) -> None:
        """Fails fast (before compiling anything) when a configured file is missing."""
        if self.siglip_path is not None:
            path = self._siglip()
            if path.is_dir():
                params_io.locate_checkpoint(path)
        if self.gemma3_path is not None and not self._gemma3().is_dir():
            raise errors.CheckpointError(
                f"Gemma3 weights {self.gemma3_path} is a file; set --gemma3-path or ${GEMMA3_ENV} to the Orbax "
                "checkpoint directory."
            )

    def load(self, params: dict) -> dict:
        out = dict(params)
        if self.siglip_path is not None:
            path = self._siglip()
            img = load_siglip_params(path)
            img = {k: v for k, v in img.items() if k not in _FRESH_IMG}
            out["img"] = _merge(img, params["img"], fresh_regex=_FRESH_IMG_REGEX, what=f"SigLIP weights {path}")
            logger.info("Loaded SigLIP from %s", path)
        if self.gemma3_path is not None:
            path = self._gemma3()
            llm = gemma3.load_gemma3_params(path)
            out["llm"] = _merge(llm, params["llm"], fresh_regex="(?!)", what=f"Gemma3 checkpoint {path}")
            logger.info("Loaded Gemma3 from %s", path)
        return out


def _merge(loaded: dict, reference: dict, *, fresh_regex: str, what: str) -> dict:
    """Loaded leaves cast to the model's dtypes, plus the model's own leaves matching `fresh_regex`; checked."""
    merged = weight_loaders.merge_params(loaded, reference, missing_regex=fresh_regex)
    params_io.check_tree_matches(reference, merged, what=what)
    return merged


def load_siglip_params(path: str | os.PathLike) -> dict:
    """The SigLIP image tower (`img` subtree, scanned `Transformer/encoderblock`) from either source layout."""
    path = pathlib.Path(path)
    if path.is_dir():
        params = params_io.restore_params(path, restore_type=np.ndarray)
        img = params.get("PaliGemma", {}).get("img")
        if img is None:
            raise errors.CheckpointError(
                f"{path} has no PaliGemma/img subtree (top-level keys {sorted(params)}); pass an openpi params "
                "checkpoint such as pi05_base/params, or a big_vision SigLIP .npz."
            )
        return img
    return siglip_from_big_vision_npz(path)


_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/(.+)$")


def siglip_from_big_vision_npz(path: str | os.PathLike) -> dict:
    """Reads the image tower of a big_vision `.npz` (SigLIP two-tower, or PaliGemma): keys `params/img/<path>`.

    The text tower, the MAP pooling head and the logit scale/bias are ignored. Checkpoints saved without
    `scan` keep one `Transformer/encoderblock_{i}` per layer; they are stacked into the scanned layout.
    """
    flat = weight_loaders._read_npz(path)
    prefix = next((p for p in ("params/img/", "img/") if any(k.startswith(p) for k in flat)), None)
    if prefix is None:
        raise errors.CheckpointError(
            f"{path} holds no image tower (no 'params/img/...' arrays; e.g. {sorted(flat)[:3]}); pass a big_vision "
            "SigLIP or PaliGemma .npz."
        )
    img = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix) and "MAPHead" not in k}
    blocks: dict[str, dict[int, np.ndarray]] = {}
    for key in list(img):
        m = _BLOCK.match(key)
        if m:
            blocks.setdefault(m.group(2), {})[int(m.group(1))] = img.pop(key)
    for leaf, per_layer in blocks.items():
        if sorted(per_layer) != list(range(len(per_layer))):
            raise errors.CheckpointError(
                f"{path} has encoder blocks {sorted(per_layer)} for {leaf!r}; expected 0..{len(per_layer) - 1}."
            )
        img[f"Transformer/encoderblock/{leaf}"] = np.stack([per_layer[i] for i in range(len(per_layer))])
    return params_io.unflatten(img)
