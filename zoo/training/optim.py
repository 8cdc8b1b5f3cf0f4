"""Optimisation: the learning-rate schedule, optimizers and parameter groups (head, backbone)."""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from zoo.config import TrainConfig


@keras.saving.register_keras_serializable(package="zoo")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak``, then ``constant``, ``step``, ``cosine`` (to 0 at
    ``total_steps``) or ``exponential`` decay."""

    def __init__(
        self,
        peak: float,
        warmup_steps: int,
        total_steps: int,
        kind: str,
        decay_steps: int,
        decay_rate: float,
    ) -> None:
        self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, total_steps
        self.kind, self.decay_steps, self.decay_rate = kind, decay_steps, decay_rate

    @classmethod
    def from_train_config(cls, config: TrainConfig, steps_per_epoch: int) -> WarmupSchedule:
        return cls(
            peak=config.learning_rate,
            warmup_steps=round(config.warmup_epochs * steps_per_epoch),
            total_steps=config.epochs * steps_per_epoch,
            kind=config.schedule,
            decay_steps=max(1, round(config.decay_epochs * steps_per_epoch)),
            decay_rate=config.decay_rate,
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
        return tf.where(step < warmup, warm, decayed)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "kind": self.kind,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
        }


class ScaledRates:
    """Mixin for a Keras optimizer: parameter groups inside one optimizer. Each variable steps
    at the schedule's learning rate times its own multiplier (`set_rates`), so there is one
    iteration counter, one set of slots and, under ``mixed_float16``, one loss scale for all
    of them. Decoupled weight decay is applied here too, at the variable's own rate (as
    PyTorch's parameter groups do), on the kernels `set_rates` names."""

    rate_multipliers: list[float]
    decayed: list[bool]
    decoupled_decay: float = 0.0

    def set_rates(
        self, variables: list, multipliers: list[float], decayed: list[bool], decay: float
    ) -> None:
        """After ``build(variables)``: each variable's learning-rate multiplier and whether
        decoupled weight decay ``decay`` shrinks it."""
        self.rate_multipliers = [1.0] * len(variables)
        self.decayed = [False] * len(variables)
        for variable, multiplier, decays in zip(variables, multipliers, decayed, strict=True):
            index = self._get_variable_index(variable)  # the index the slots are kept by
            self.rate_multipliers[index] = float(multiplier)
            self.decayed[index] = bool(decays)
        self.decoupled_decay = float(decay)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        multiplier = self.rate_multipliers[index]
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        if self.decoupled_decay and self.decayed[index]:
            lr = tf.cast(learning_rate, variable.dtype)
            self.assign_sub(variable, variable * tf.cast(self.decoupled_decay, variable.dtype) * lr)
        super().update_step(gradient, variable, learning_rate)


@keras.saving.register_keras_serializable(package="zoo")
class SGD(ScaledRates, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with per-variable learning rates (`ScaledRates`)."""


@keras.saving.register_keras_serializable(package="zoo")
class Adam(ScaledRates, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with per-variable learning rates and decoupled weight decay
    (AdamW when it is set; `ScaledRates`)."""


@keras.saving.register_keras_serializable(package="zoo")
class RMSprop(ScaledRates, keras.optimizers.RMSprop):
    """`keras.optimizers.RMSprop` with per-variable learning rates (`ScaledRates`)."""


def make_optimizer(
    config: TrainConfig, schedule: keras.optimizers.schedules.LearningRateSchedule, precision: str
) -> keras.optimizers.Optimizer:
    """The configured optimizer (a `ScaledRates` one; call `Optimisation`'s builder for the
    rates), wrapped in one ``LossScaleOptimizer`` under ``mixed_float16``. Weight decay is not
    the optimizer's own: 'l2' is in the loss, 'decoupled' in `ScaledRates`."""
    if config.optimizer == "sgd":
        opt = SGD(learning_rate=schedule, momentum=config.momentum, nesterov=config.nesterov)
    elif config.optimizer in ("adam", "adamw"):  # adamw: Adam with decoupled decay
        opt = Adam(learning_rate=schedule)
    else:
        opt = RMSprop(learning_rate=schedule, momentum=config.momentum)
    if precision == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def decoupled_decay(config: TrainConfig) -> float:
    """The weight decay the optimizer applies itself: ``decoupled`` mode's (also for
    ``adamw``, whose decay is decoupled whenever it is not the loss's L2 term)."""
    return config.weight_decay if config.weight_decay_mode == "decoupled" else 0.0


class Optimisation:
    """What updates weights: one optimizer, its schedule, and the variables it steps now.

    Every variable the run may train is built into the optimizer at the start, each with its
    learning-rate multiplier (the classifier's 1, the backbone's ``backbone_lr_mult``), so its
    slots and the checkpoint have one shape; `train` chooses which of them the step updates
    (fine-tuning's frozen stage steps the classifier alone) and `restart` gives a stage a
    fresh optimizer state and schedule.
    """

    def __init__(
        self,
        optimizer: keras.optimizers.Optimizer,
        schedule: keras.optimizers.schedules.LearningRateSchedule,
        variables: list,
        multipliers: dict[str, float],
    ) -> None:
        self.optimizer = optimizer
        self.schedule = schedule
        self.built = list(variables)
        self.variables = list(variables)
        self.multipliers = dict(multipliers)
        self._fresh = [v.numpy() for v in self.inner.variables]

    @property
    def inner(self) -> keras.optimizers.Optimizer:
        """The optimizer without its loss-scale wrapper."""
        return getattr(self.optimizer, "inner_optimizer", self.optimizer)

    @property
    def loss_scaled(self) -> bool:
        return isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)

    @property
    def kernels(self) -> list:
        """Convolution and dense kernels trained now: decayed and watched by the update-ratio
        check."""
        return [v for v in self.variables if v.path.endswith("/kernel")]

    @property
    def iterations(self) -> tf.Variable:
        return self.optimizer.iterations

    def multiplier(self, variable) -> float:
        """``variable``'s learning rate as a multiple of the schedule's."""
        return self.multipliers[variable.path]

    def learning_rate(self) -> float:
        """The head's learning rate of the step that ran last."""
        return float(self.schedule(self.iterations - 1))

    def train(self, variables: list) -> None:
        """Step only ``variables`` (each built into the optimizer) from now on."""
        known = {id(v) for v in self.built}
        unknown = [v.path for v in variables if id(v) not in known]
        if unknown:
            raise ValueError(f"not built into the optimizer: {', '.join(unknown)}")
        self.variables = list(variables)

    def restart(self, schedule: keras.optimizers.schedules.LearningRateSchedule) -> None:
        """A fresh optimizer for a new stage: iteration 0, slots as built (zero momentum and
        moments, so Adam's bias correction starts again), on ``schedule``. The loss scale is
        kept: it is about the model's numerics, not the stage."""
        self.use_schedule(schedule)
        for variable, value in zip(self.inner.variables, self._fresh, strict=True):
            variable.assign(value)

    def use_schedule(self, schedule: keras.optimizers.schedules.LearningRateSchedule) -> None:
        """Step on ``schedule`` from now on (trace the step again to take it)."""
        self.schedule = schedule
        self.inner.learning_rate = schedule


def build_optimisation(
    config: TrainConfig,
    model: keras.Model,
    classifier: str,
    steps_per_epoch: int,
    precision: str,
    schedule: keras.optimizers.schedules.LearningRateSchedule | None = None,
) -> Optimisation:
    """One optimizer over ``model``'s trainable variables: the classifier named ``classifier``
    at the schedule's rate, every other variable at ``config.backbone_multiplier`` times it.
    ``freeze_backbone`` first leaves only the classifier trainable (batch norm in inference
    mode). Slots are built here: call inside the strategy's scope.

    ``schedule`` replaces the config's warm-up schedule (the learning-rate finder's ramp)."""
    if config.freeze_backbone:
        for layer in model.layers:
            layer.trainable = layer.name == classifier
    trainable = model.trainable_variables
    head = [v for v in trainable if v.path.startswith(classifier + "/")]
    backbone = [v for v in trainable if not v.path.startswith(classifier + "/")]
    # In the model's own order, as Keras builds an optimizer when it loads a saved model.
    variables = list(trainable)
    if schedule is None:
        schedule = WarmupSchedule.from_train_config(config, steps_per_epoch)
    optimizer = make_optimizer(config, schedule, precision)
    optimizer.build(variables)  # slots now, inside the strategy scope
    multipliers = {v.path: 1.0 for v in head}
    multipliers.update({v.path: config.backbone_multiplier for v in backbone})
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    inner.set_rates(
        variables,
        [multipliers[v.path] for v in variables],
        [v.path.endswith("/kernel") for v in variables],
        decoupled_decay(config),
    )
    return Optimisation(optimizer, schedule, variables, multipliers)
