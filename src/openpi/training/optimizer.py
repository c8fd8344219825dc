"""Learning-rate schedules and optimizers (openpi's defaults), with frozen parameters left untouched.

Frozen leaves (LoRA base weights) get `set_to_zero` and no optimizer state at all, which is where LoRA's
memory saving comes from; gradient clipping sees only the trainable leaves.
"""

from collections.abc import Callable
import dataclasses
from typing import Any
from typing import Protocol

import jax
import optax


class LRScheduleConfig(Protocol):
    def create(self) -> optax.Schedule: ...


class OptimizerConfig(Protocol):
    def create(self, lr: optax.ScalarOrSchedule, weight_decay_mask: Any = None) -> optax.GradientTransformation: ...


@dataclasses.dataclass(frozen=True)
class CosineDecaySchedule:
    """Linear warmup from ~0 to peak_lr, then cosine decay to decay_lr at decay_steps."""

    warmup_steps: int = 1_000
    peak_lr: float = 2.5e-5
    decay_steps: int = 30_000
    decay_lr: float = 2.5e-6

    def create(self) -> optax.Schedule:
        return optax.warmup_cosine_decay_schedule(
            init_value=self.peak_lr / (self.warmup_steps + 1),
            peak_value=self.peak_lr,
            warmup_steps=self.warmup_steps,
            decay_steps=self.decay_steps,
            end_value=self.decay_lr,
        )


@dataclasses.dataclass(frozen=True)
class RsqrtDecaySchedule:
    """Linear warmup, then peak_lr / sqrt(1 + (step - warmup) / timescale)."""

    warmup_steps: int = 1_000
    peak_lr: float = 5e-5
    timescale: float = 10_000

    def create(self) -> optax.Schedule:
        return optax.join_schedules(
            [
                optax.linear_schedule(self.peak_lr / (self.warmup_steps + 1), self.peak_lr, self.warmup_steps),
                lambda step: self.peak_lr / jax.numpy.sqrt((self.timescale + step) / self.timescale),
            ],
            [self.warmup_steps],
        )


@dataclasses.dataclass(frozen=True)
class AdamW:
    """AdamW with global-norm clipping (openpi: b1 0.9, b2 0.95, eps 1e-8, wd 1e-10, clip 1.0)."""

    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 1e-10
    clip_gradient_norm: float = 1.0

    def create(self, lr: optax.ScalarOrSchedule, weight_decay_mask: Any = None) -> optax.GradientTransformation:
        adamw = optax.adamw(
            lr, b1=self.b1, b2=self.b2, eps=self.eps, weight_decay=self.weight_decay, mask=weight_decay_mask
        )
        return optax.chain(optax.clip_by_global_norm(self.clip_gradient_norm), adamw)


@dataclasses.dataclass(frozen=True)
class SGD:
    lr: float = 5e-5
    momentum: float = 0.9
    nesterov: bool = False

    def create(self, lr: optax.ScalarOrSchedule, weight_decay_mask: Any = None) -> optax.GradientTransformation:
        del weight_decay_mask
        return optax.sgd(lr, momentum=self.momentum, nesterov=self.nesterov)


def create_optimizer(
    optimizer: OptimizerConfig,
    lr_schedule: LRScheduleConfig,
    trainable_mask: Any = None,
    weight_decay_mask: Any = None,
) -> optax.GradientTransformation:
    """Builds the optimizer; leaves where `trainable_mask` is False get zero updates and no state.

    `trainable_mask` is a pytree of bools with the params' structure (or a callable params -> such a tree).
    """
    tx = optimizer.create(lr_schedule.create(), weight_decay_mask=weight_decay_mask)
    if trainable_mask is None:
        return tx
    labels: Any
    if callable(trainable_mask):
        labels = lambda params: jax.tree.map(lambda t: "train" if t else "freeze", trainable_mask(params))  # noqa: E731
    else:
        labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable_mask)
    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)


def learning_rate_fn(lr_schedule: LRScheduleConfig) -> Callable[[int], float]:
    """The schedule as a plain function, for logging."""
    schedule = lr_schedule.create()
    return lambda step: float(schedule(step))
