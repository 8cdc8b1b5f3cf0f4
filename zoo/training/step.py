"""The step functions: one training step per replica, N of them in one ``tf.function`` call,
evaluation, and batch-norm re-estimation.

The loss is averaged over the global batch (``tf.nn.compute_average_loss``) and the L2 term is
scaled per replica, so one step is the same update on one device or many; gradients are clipped
by the norm of their sum over replicas (what the optimizer applies). Every function returns the
sums ``(loss, top1, top5, count)`` over its examples, reduced over replicas on the device, so
the host reads four scalars per call. Evaluation batches are padded to full size by the
pipeline; padding examples carry the label -1 and count for nothing.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.config import TrainConfig
from zoo.training.optim import Optimisation

SUM = tf.distribute.ReduceOp.SUM


class Steps:
    """The compiled functions of one model, optimisation and strategy.

    Attributes:
        jit_compile: Whether the replica steps are compiled with XLA (the runtime's).
        train_function: ``(iterator, steps) -> sums``: ``steps`` (an int32 scalar) training
            steps over a distributed iterator in one call; traced once.
        eval_function: ``(iterator, steps) -> sums`` over ``steps`` evaluation batches.
        calibrate_function: ``(iterator, steps) -> sums``: training-mode forward passes whose
            batch-norm statistics become the moving averages' exact mean (see `calibrate`).
    """

    def __init__(
        self,
        model: keras.Model,
        optimisation: Optimisation,
        config: TrainConfig,
        strategy: tf.distribute.Strategy,
        classes: int,
        *,
        jit_compile: bool = False,
    ) -> None:
        self.model, self.optimisation, self.config = model, optimisation, config
        self.strategy, self.classes = strategy, classes
        self.batch_norms = [
            layer
            for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
        ]
        jit = self.jit_compile = jit_compile
        self._train_replica = tf.function(self.replica_train_step, jit_compile=jit)
        self._eval_replica = tf.function(self.replica_eval_step, jit_compile=jit)
        self.train_function = tf.function(self._loop(self._train_replica))
        self.eval_function = tf.function(self._loop(self._eval_replica))
        self.calibrate_function = tf.function(self._calibrate_loop)

    # One replica ----------------------------------------------------------------------------

    def per_example_loss(self, labels, logits):
        if labels.shape.rank == 1:
            labels = tf.one_hot(labels, self.classes)  # -1 (padding) gives a zero row
        return keras.losses.categorical_crossentropy(
            labels, logits, from_logits=True, label_smoothing=self.config.label_smoothing
        )

    def counts(self, labels, logits, per_example):
        """Sums of loss, top-1 and top-5 hits, and the number of real (label >= 0) examples."""
        targets = labels if labels.shape.rank == 1 else tf.argmax(labels, axis=-1)
        targets = tf.cast(targets, tf.int32)
        real = tf.cast(targets >= 0, tf.float32)
        safe = tf.maximum(targets, 0)
        top1 = tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), safe), tf.float32)
        top5 = tf.cast(tf.math.in_top_k(safe, logits, min(5, self.classes)), tf.float32)
        return (
            tf.reduce_sum(per_example * real),
            tf.reduce_sum(top1 * real),
            tf.reduce_sum(top5 * real),
            tf.reduce_sum(real),
        )

    def replica_train_step(self, images, labels):
        """One optimizer step on one replica's share of the global batch."""
        cfg, opt = self.config, self.optimisation
        optimizer = opt.optimizer
        variables = opt.variables
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            per_example = self.per_example_loss(labels, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=cfg.batch_size)
            if cfg.weight_decay_mode == "l2" and cfg.weight_decay > 0:
                l2 = tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in opt.kernels])
                loss += tf.nn.scale_regularization_loss(cfg.weight_decay * l2)
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        grads = tape.gradient(scaled, variables)
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            grads = self._all_or_none_finite(grads)
        if cfg.clip_norm is not None:
            grads = self._clip(grads)
        optimizer.apply(grads, variables)  # each at its own rate (`ScaledRates`)
        return self.counts(labels, logits, per_example)

    def _all_or_none_finite(self, grads):
        """Under loss scaling, Keras decides to skip a step from the first replica's gradients
        alone; if another replica's overflowed, its inf would be summed in and applied. So when
        any replica's gradients are not finite, every replica's become NaN: all skip the step
        and the loss scale falls."""
        context = tf.distribute.get_replica_context()
        if context is None or self.strategy.num_replicas_in_sync == 1:
            return grads
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        overflowed = context.all_reduce(SUM, 1.0 - tf.cast(finite, tf.float32))
        ok = overflowed < 0.5  # no replica overflowed
        return [
            tf.where(ok, g, tf.fill(tf.shape(g), tf.constant(float("nan"), g.dtype))) for g in grads
        ]

    def _clip(self, grads):
        """Clip by the norm of the gradient summed over replicas (what the optimizer applies)."""
        context = tf.distribute.get_replica_context()
        total = context.all_reduce(SUM, grads)
        norm = tf.linalg.global_norm(total)
        optimizer = self.optimisation.optimizer
        if self.optimisation.loss_scaled:
            norm = norm / tf.cast(optimizer.dynamic_scale, norm.dtype)
        factor = tf.minimum(1.0, self.config.clip_norm / (norm + 1e-12))
        return [g * tf.cast(factor, g.dtype) for g in grads]

    def replica_eval_step(self, images, labels, training: bool = False):
        logits = self.model(images, training=training)
        return self.counts(labels, logits, self.per_example_loss(labels, logits))

    # N steps per call -----------------------------------------------------------------------

    def _reduce(self, values):
        return tuple(self.strategy.reduce(SUM, v, axis=None) for v in values)

    def _loop(self, replica_fn):
        def run(iterator, steps):
            totals = (tf.constant(0.0),) * 4
            for _ in tf.range(steps):
                values = self._reduce(self.strategy.run(replica_fn, args=next(iterator)))
                totals = tuple(t + v for t, v in zip(totals, values, strict=True))
            return totals

        return run

    def _calibrate_loop(self, iterator, steps):
        """Forward passes in training mode with each batch norm's momentum at (k-1)/k for the
        k-th batch: the moving statistics end as the plain mean of the batches' statistics."""
        totals = (tf.constant(0.0),) * 4
        for k in tf.range(1, steps + 1):
            momentum = tf.cast(k - 1, tf.float32) / tf.cast(k, tf.float32)
            batch = next(iterator)
            values = self.strategy.run(self._calibrate_replica, args=(*batch, momentum))
            totals = tuple(t + v for t, v in zip(totals, self._reduce(values), strict=True))
        return totals

    def _calibrate_replica(self, images, labels, momentum):
        saved = [layer.momentum for layer in self.batch_norms]
        for layer in self.batch_norms:  # read while tracing: the update uses this tensor
            object.__setattr__(layer, "momentum", momentum)
        try:
            return self.replica_eval_step(images, labels, training=True)
        finally:
            for layer, value in zip(self.batch_norms, saved, strict=True):
                object.__setattr__(layer, "momentum", value)

    # Host side ------------------------------------------------------------------------------

    def train(self, iterator, steps: int) -> tuple[float, float, float, float]:
        """Run ``steps`` training steps in one call; the reduced sums as Python floats."""
        return _floats(self.train_function(iterator, tf.constant(steps, tf.int32)))

    def evaluate(self, iterator, steps: int) -> tuple[float, float, float, float]:
        return _floats(self.eval_function(iterator, tf.constant(steps, tf.int32)))

    def calibrate(self, iterator, steps: int) -> None:
        """Re-estimate every trainable batch norm's moving mean and variance as the mean over
        ``steps`` batches of the statistics a training-mode pass computes (precise BN, Wu &
        Johnson 2021), instead of an exponential average that lags the weights."""
        if self.batch_norms and steps > 0:
            self.calibrate_function(iterator, tf.constant(steps, tf.int32))
            if self.strategy.num_replicas_in_sync > 1:
                self._combine_replicas()

    def _combine_replicas(self) -> None:
        """Each replica estimated its statistics from its own share of the batches: give every
        copy the pooled figures (mean of the means; mean of the variances plus the variance of
        the means), so evaluation, checkpoints and exports agree."""
        if getattr(self, "_combine_function", None) is None:
            self._combine_function = tf.function(self._combine)
        self._combine_function()

    def _combine(self):
        def local():
            out = []
            for layer in self.batch_norms:
                mean = tf.convert_to_tensor(layer.moving_mean)
                out += [mean, tf.convert_to_tensor(layer.moving_variance), mean * mean]
            return out

        mean_op = tf.distribute.ReduceOp.MEAN
        pooled = [self.strategy.reduce(mean_op, v, axis=None) for v in self.strategy.run(local)]
        for i, layer in enumerate(self.batch_norms):
            mean, variance, square = pooled[3 * i : 3 * i + 3]
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance + square - mean * mean)

    def loss_on(self, batch, *, training: bool) -> float:
        """The mean loss of one distributed batch; batch-norm statistics are left unchanged."""
        saved = [v.numpy() for v in self.model.non_trainable_variables]
        values = _floats(self._reduce(self.strategy.run(self._eval_once(training), args=batch)))
        for variable, value in zip(self.model.non_trainable_variables, saved, strict=True):
            variable.assign(value)
        return values[0] / max(values[3], 1.0)

    def gradient_norms(self, batch, variables) -> list[float]:
        """Norms of the cross-entropy's gradient (without weight decay; a training-mode pass,
        summed over replicas) with respect to each of ``variables``, on one distributed batch.
        Batch-norm statistics are left unchanged; the caller keeps the dropout RNG."""
        key = tuple(id(v) for v in variables)
        if getattr(self, "_gradient_key", None) != key:
            self._gradient_key, self._gradient_vars = key, list(variables)
            self._gradient_function = tf.function(self._gradient_norms)
        saved = [v.numpy() for v in self.model.non_trainable_variables]
        norms = self._gradient_function(batch)
        for variable, value in zip(self.model.non_trainable_variables, saved, strict=True):
            variable.assign(value)
        return [float(n) for n in norms]

    def _gradient_norms(self, batch):
        grads = self.strategy.run(self._gradient_replica, args=batch)
        total = [self.strategy.reduce(SUM, g, axis=None) for g in grads]
        return [tf.norm(g) for g in total]

    def _gradient_replica(self, images, labels):
        optimizer = self.optimisation.optimizer
        scaled = self.optimisation.loss_scaled
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            loss = tf.nn.compute_average_loss(
                self.per_example_loss(labels, logits), global_batch_size=self.config.batch_size
            )
            if scaled:  # as the training step: float16 gradients would underflow unscaled
                loss = optimizer.scale_loss(loss)
        grads = tape.gradient(loss, self._gradient_vars)
        unscale = 1.0 / tf.cast(optimizer.dynamic_scale, tf.float32) if scaled else 1.0
        return [
            tf.zeros(v.shape, tf.float32) if g is None else tf.cast(g, tf.float32) * unscale
            for g, v in zip(grads, self._gradient_vars, strict=True)
        ]

    def _eval_once(self, training: bool):
        def step(images, labels):
            return self.replica_eval_step(images, labels, training=training)

        return tf.function(step)


def _floats(values) -> tuple[float, float, float, float]:
    loss, top1, top5, count = (float(v) for v in values)
    return loss, top1, top5, count
