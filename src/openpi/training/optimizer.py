"""The learning-rate schedule and optimizer every config uses (openpi's defaults).

Frozen leaves (LoRA base weights, frozen value backbones) never reach the optimizer: `trainer.Trainer` splits
them off before differentiating, so they get no optimizer state (LoRA's memory saving) and gradient clipping
sees only the trainable leaves.
"""

from collections.abc import Callable
import dataclasses

import optax


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
class AdamW:
    """AdamW with global-norm clipping (openpi: b1 0.9, b2 0.95, eps 1e-8, wd 1e-10, clip 1.0)."""

    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 1e-10
    clip_gradient_norm: float = 1.0

    def create(self, lr: optax.ScalarOrSchedule) -> optax.GradientTransformation:
        adamw = optax.adamw(lr, b1=self.b1, b2=self.b2, eps=self.eps, weight_decay=self.weight_decay)
        return optax.chain(optax.clip_by_global_norm(self.clip_gradient_norm), adamw)


def create_optimizer(optimizer: AdamW, lr_schedule: CosineDecaySchedule) -> optax.GradientTransformation:
    """The optimizer over the trainable leaves (the trainer never hands it frozen ones)."""
    return optimizer.create(lr_schedule.create())


def learning_rate_fn(lr_schedule: CosineDecaySchedule) -> Callable[[int], float]:
    """The schedule as a plain function, for logging."""
    schedule = lr_schedule.create()
    return lambda step: float(schedule(step))
