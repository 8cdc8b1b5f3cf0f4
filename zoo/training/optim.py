"""Optimisation: the learning-rate schedule, optimizers and parameter groups (head, backbone)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from zoo.config import TrainConfig


@keras.saving.register_keras_serializable(package="zoo")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak``, then ``constant``, ``step``, ``cosine`` (to 0 at
    ``total_steps``) or ``exponential`` decay; scaled by ``multiplier``."""

    def __init__(
        self,
        peak: float,
        warmup_steps: int,
        total_steps: int,
        kind: str,
        decay_steps: int,
        decay_rate: float,
        multiplier: float = 1.0,
    ) -> None:
        self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, total_steps
        self.kind, self.decay_steps, self.decay_rate = kind, decay_steps, decay_rate
        self.multiplier = multiplier

    @classmethod
    def from_train_config(
        cls, config: TrainConfig, steps_per_epoch: int, multiplier: float = 1.0
    ) -> WarmupSchedule:
        return cls(
            peak=config.learning_rate,
            warmup_steps=round(config.warmup_epochs * steps_per_epoch),
            total_steps=config.epochs * steps_per_epoch,
            kind=config.schedule,
            decay_steps=max(1, round(config.decay_epochs * steps_per_epoch)),
            decay_rate=config.decay_rate,
            multiplier=multiplier,
        )

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = float(max(self.warmup_steps, 0))
        after = tf.maximum(step - warmup, 0.0)
        if self.kind == "cosine":
            span = float(max(self.total_steps - self.warmup_steps, 1))
            decayed = 0.5 * self.peak * (1.0 + tf.cos(math.pi * tf.minimum(after / span, 1.0)))
        elif self.kind == "step":
            decayed = self.peak * self.decay_rate ** tf.floor(after / self.decay_steps)
        elif self.kind == "exponential":
            decayed = self.peak * self.decay_rate ** (after / self.decay_steps)
        else:
            decayed = tf.constant(self.peak, tf.float32)
        warm = self.peak * step / warmup if warmup > 0 else decayed
        return self.multiplier * tf.where(step < warmup, warm, decayed)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "kind": self.kind,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "multiplier": self.multiplier,
        }


def make_optimizer(
    config: TrainConfig, schedule: keras.optimizers.schedules.LearningRateSchedule, precision: str
) -> keras.optimizers.Optimizer:
    """The configured optimizer; decoupled weight decay skips biases and batch norm; wrapped in
    a ``LossScaleOptimizer`` under ``mixed_float16``."""
    decay = config.weight_decay if config.weight_decay_mode == "decoupled" else None
    kwargs: dict[str, Any] = {"learning_rate": schedule, "weight_decay": decay or None}
    if config.optimizer == "sgd":
        opt = keras.optimizers.SGD(momentum=config.momentum, nesterov=config.nesterov, **kwargs)
    elif config.optimizer == "adam":
        opt = keras.optimizers.Adam(**kwargs)
    elif config.optimizer == "adamw":
        kwargs["weight_decay"] = config.weight_decay if decay is not None else 0.0
        opt = keras.optimizers.AdamW(**kwargs)
    else:
        opt = keras.optimizers.RMSprop(momentum=config.momentum, **kwargs)
    if opt.weight_decay:
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    if precision == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


@dataclass
class ParamGroup:
    """One optimizer and the variables it updates."""

    name: str
    optimizer: keras.optimizers.Optimizer
    variables: list


@dataclass
class Optimisation:
    """Everything that updates weights: the schedule, the groups, the decayed kernels."""

    schedule: keras.optimizers.schedules.LearningRateSchedule
    groups: list[ParamGroup]

    @property
    def variables(self) -> list:
        """The trained variables, in the order the step's gradients come."""
        return [v for group in self.groups for v in group.variables]

    @property
    def kernels(self) -> list:
        """Convolution and dense kernels: L2-decayed and watched by the update-ratio check."""
        return [v for v in self.variables if v.path.endswith("/kernel")]

    @property
    def iterations(self) -> tf.Variable:
        return self.groups[0].optimizer.iterations

    def learning_rate(self) -> float:
        """The head's learning rate of the step that ran last."""
        return float(self.schedule(self.iterations - 1))


def build_optimisation(
    config: TrainConfig,
    model: keras.Model,
    classifier: str,
    steps_per_epoch: int,
    precision: str,
    schedule_for: Callable[[float], keras.optimizers.schedules.LearningRateSchedule] | None = None,
) -> Optimisation:
    """The schedule and parameter groups for ``model``: one optimizer for every trainable
    variable, or, with ``backbone_lr_mult != 1``, one for the classifier named ``classifier``
    and one for the rest. ``freeze_backbone`` leaves only the classifier trainable (batch norm
    in inference mode). Slots are built here: call inside the strategy's scope.

    ``schedule_for(multiplier)`` replaces the config's warm-up schedule (the learning-rate
    finder's exponential ramp); the backbone's group gets ``backbone_lr_mult``."""
    if config.freeze_backbone:
        for layer in model.layers:
            layer.trainable = layer.name == classifier
    trainable = model.trainable_variables
    head = [v for v in trainable if v.path.startswith(classifier + "/")]
    backbone = [v for v in trainable if not v.path.startswith(classifier + "/")]
    if schedule_for is None:

        def schedule_for(multiplier: float) -> keras.optimizers.schedules.LearningRateSchedule:
            return WarmupSchedule.from_train_config(config, steps_per_epoch, multiplier)

    schedule = schedule_for(1.0)
    split = bool(backbone) and config.backbone_lr_mult != 1.0
    if split and precision == "mixed_float16":
        raise ValueError(
            "backbone_lr_mult with mixed_float16 is not supported: the two optimizers would "
            "keep separate loss scales. Use mixed_bfloat16 or float32 for it."
        )
    if split:
        backbone_schedule = schedule_for(config.backbone_lr_mult)
        groups = [
            ParamGroup("head", make_optimizer(config, schedule, precision), head),
            ParamGroup("backbone", make_optimizer(config, backbone_schedule, precision), backbone),
        ]
    else:
        groups = [ParamGroup("all", make_optimizer(config, schedule, precision), head + backbone)]
    for group in groups:
        group.optimizer.build(group.variables)  # slots now, inside the strategy scope
    return Optimisation(schedule, groups)
