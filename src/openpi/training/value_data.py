"""Value-model data: LeRobot frames -> (observation, value_label), through the policy's reader and transforms.

The pieces are the policy's: `LeRobotDataset` reads the frame, `RepackTransform` + the config's robot transform
(`ValueDataConfig.robot_inputs`: YAM or sim, as in the policy data configs) build `image` / `image_mask` / `state`, `Normalize` scales the state, `ResizeImages` pads the cameras, and the generic
`data_loader.DataLoader` batches, prefetches and places global arrays on the mesh. Only the last step differs:
the prompt is tokenised with the Gemma3 tokenizer in the value model's prompt format, and the frame's
`value_label` (or legacy `value_lable`) rides along as `value`.

Train and validation frames are split BY EPISODE: frames of one episode are strongly correlated, so a frame-level
split would measure memorisation, not generalisation.
"""

from collections.abc import Sequence
import dataclasses
from typing import Any

import numpy as np

from openpi import transforms as _transforms
from openpi.datasets import recap_columns
from openpi.models import tokenizer as _tokenizer
from openpi.models import value_model as _value_model
from openpi.shared import errors
from openpi.shared import normalize as _normalize
from openpi.training import data_loader as _data_loader

VALUE_KEY = "value"


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) episode positions: a seeded draw of round(val_fraction * n) episodes (>= 1 if n > 1) for val."""
    if num_episodes < 1:
        raise errors.DatasetError("The dataset has no episodes; record or convert some first.")
    n_val = 0 if val_fraction <= 0 or num_episodes < 2 else max(1, round(val_fraction * num_episodes))
    n_val = min(n_val, num_episodes - 1)
    order = np.random.default_rng([seed, 0x5A1]).permutation(num_episodes)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def episode_frames(dataset: Any, episodes: Sequence[int]) -> np.ndarray:
    """Dataset frame indices of the given episode positions, in order."""
    parts = [np.arange(dataset.episodes[e].from_index, dataset.episodes[e].to_index) for e in episodes]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0,), np.int64)


def value_column(dataset: Any, data: Any) -> str:
    """The column holding the value targets (accepting `value_lable`), checked finite and in [-1, 0]."""
    if data.value_column == recap_columns.VALUE_LABEL:
        return recap_columns.validate_recap_columns(dataset, required=(recap_columns.VALUE_LABEL,))[
            recap_columns.VALUE_LABEL
        ]
    if not dataset.has_column(data.value_column):
        raise errors.DatasetError(
            f"Dataset {dataset.root} has no value column {data.value_column!r}; fix --value-column."
        )
    return data.value_column


def train_frames(dataset: Any, data: Any) -> np.ndarray:
    """The frames of the training episodes (the seeded episode split of `data`)."""
    train_eps, _ = split_episodes(dataset.num_episodes, data.val_fraction, data.split_seed)
    return episode_frames(dataset, train_eps)


def state_norm_stats(dataset: Any, data: Any) -> dict[str, _normalize.NormStats]:
    """Quantile stats of the state over the training frames only (the validation episodes stay unseen).

    Computed by `scripts/compute_norm_stats.py <value config>` (openpi.training.norm_stats), never by training.
    """
    states = np.asarray(dataset.column(data.state_key), np.float32)[train_frames(dataset, data)]
    return {"state": _normalize.compute(states)}


def check_dataset(dataset: Any, data: Any) -> None:
    """Fails before compiling when the dataset lacks a camera, the state or the value column."""
    _data_loader.check_dataset(
        dataset,
        columns=(data.state_key,),
        features=[col for _, col in data.cameras],
        fix="fix the value config's cameras and state key or pass the right --data_dir",
    )
    value_column(dataset, data)


@dataclasses.dataclass(frozen=True)
class TokenizeValuePrompt:
    """prompt (+ normalised state) -> tokenized_prompt / tokenized_prompt_mask in the value model's format."""

    tokenizer: Any
    prompt_format: str

    def __call__(self, data: dict) -> dict:
        if "prompt" not in data:
            raise _transforms.TransformError(
                "The frame has no 'prompt'; enable prompt_from_task or set default_prompt in the value config."
            )
        data = dict(data)
        prompt = _transforms.to_text(data.pop("prompt"))
        state = np.asarray(data["state"], np.float32) if self.prompt_format == "task_state" else None
        tokens, mask = _value_model.tokenize_value_prompt(self.tokenizer, self.prompt_format, prompt, state)
        data["tokenized_prompt"], data["tokenized_prompt_mask"] = tokens, mask
        return data


@dataclasses.dataclass(frozen=True)
class ValueItemFactory:
    """Frame i -> {image, image_mask, state, tokenized_prompt(_mask), value}. Picklable for process workers."""

    data: Any  # value_config.ValueDataConfig
    model: _value_model.ValueModelConfig
    norm_stats: dict[str, _normalize.NormStats] | None
    tokenizer_path: str | None = None
    # The dataset opened once by the process (thread workers share it, process workers unpickle it once);
    # None opens `data.repo_id` here.
    dataset: Any = None
    # False for labelling: the dataset need not have a value column, items carry no `value`.
    with_targets: bool = True

    def transforms(self) -> _transforms.DataTransformFn:
        structure: dict[str, Any] = {"images": dict(self.data.cameras), "state": self.data.state_key}
        if self.data.prompt_from_task:
            structure["prompt"] = "task"
        tokenizer = _tokenizer.Gemma3Tokenizer(self.tokenizer_path, max_len=self.model.max_token_len)
        if tokenizer.vocab_size > self.model.llm_config.vocab_size:
            raise errors.ConfigError(
                f"The tokenizer {tokenizer.model_path} has {tokenizer.vocab_size} pieces but Gemma3 variant "
                f"{self.model.gemma3_variant!r} embeds only {self.model.llm_config.vocab_size}; use a matching "
                "--tokenizer_path."
            )
        return _transforms.compose(
            [
                _transforms.RepackTransform(structure),
                self.data.robot_inputs(self.model),
                _transforms.Normalize(self.norm_stats, use_quantiles=True),
                _transforms.InjectDefaultPrompt(self.data.default_prompt),
                _transforms.ResizeImages(*self.model.image_resolution),
                TokenizeValuePrompt(tokenizer, self.model.prompt_format),
            ]
        )

    def __call__(self) -> _data_loader.ItemFn:
        dataset = self.dataset if self.dataset is not None else _data_loader.open_dataset(self.data.repo_id)
        values = None
        if self.with_targets:
            values = np.asarray(dataset.column(value_column(dataset, self.data)), np.float32).reshape(-1)
        keys = [col for _, col in self.data.cameras] + [self.data.state_key]
        chain = self.transforms()

        def item(index: int, sample_id: int) -> dict[str, Any]:
            del sample_id
            data = chain(dataset.get(index, keys=keys))
            out = {k: data[k] for k in ("image", "image_mask", "state", "tokenized_prompt", "tokenized_prompt_mask")}
            if values is not None:
                out[VALUE_KEY] = values[index]
            return out

        return item


def batch_spec(model: _value_model.ValueModelConfig, batch_size: int) -> dict[str, Any]:
    """A value training batch as `jax.ShapeDtypeStruct`s (the model's input spec plus the value target): what the
    train step is lowered on when nothing may be allocated (compile-only budgets)."""
    import jax

    from openpi.models import model as _model

    obs = _model.Observation.to_dict(model.inputs_spec(batch_size=batch_size))
    return {**obs, VALUE_KEY: jax.ShapeDtypeStruct((batch_size,), np.float32)}


def create_loader(
    factory: ValueItemFactory,
    frames: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool,
    num_workers: int,
    sharding: Any = None,
    start_step: int = 0,
    num_batches: int | None = None,
) -> _data_loader.DataLoader:
    """The generic data loader over `frames` (this process's share of every global batch)."""
    import jax

    sampler = _data_loader.BatchSampler(
        frames,
        batch_size,
        seed=seed,
        shuffle=shuffle,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    return _data_loader.DataLoader(
        factory,
        sampler,
        num_workers=num_workers,
        sharding=sharding,
        start_step=start_step,
        num_batches=num_batches,
    )


def validation_frames(frames: np.ndarray, max_frames: int) -> np.ndarray:
    """A fixed, evenly spaced subset of the held-out frames (all of them when max_frames is 0 or enough)."""
    if max_frames <= 0 or len(frames) <= max_frames:
        return frames
    return frames[np.linspace(0, len(frames) - 1, max_frames).round().astype(np.int64)]
