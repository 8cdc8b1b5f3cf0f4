"""The training engine: one `Trainer` for ``python -m zoo.train``, the tuner and the benchmarks.

The train and eval steps are ``tf.function``s with fixed input signatures (traced once), run on
every replica with ``strategy.run`` and reduced across replicas. The loss is averaged over the
global batch (``tf.nn.compute_average_loss``) and the L2 term is scaled per replica, so one
step is the same update on one device or many. Everything a resumed run needs is checkpointed:
model, optimizer (slots, step, loss scale), epoch and the dropout RNG state; the data order and
augmentation are functions of ``(seed, epoch)``.

A run directory holds ``config.json``, ``data.json`` (classes, input size, normalisation),
``history.csv``, ``metrics.json``, ``curves.png``, ``checkpoints/`` (last N), ``best/`` and
``tensorboard/``.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import pipelines
import zoo
from zoo.config import TrainConfig

logger = logging.getLogger("zoo.train")

HISTORY_FIELDS = (
    "epoch", "learning_rate", "loss", "accuracy", "top5", "val_loss", "val_accuracy", "val_top5",
    "images_per_second", "seconds",
)  # fmt: skip
STATS_EXAMPLES = 20_000  # images used for the normalisation and PCA statistics
INITIAL_LOSS_TOLERANCE = 1.0  # warn when |initial loss - ln(classes)| exceeds this (nats)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


# Strategy and precision ---------------------------------------------------------------------


def resolve_strategy(name: str) -> tf.distribute.Strategy:
    """``auto``: mirrored over several GPUs, default otherwise; ``mirrored`` uses every GPU, or
    every logical CPU device when there is no GPU; ``multiworker`` reads ``TF_CONFIG``."""
    if name == "multiworker":  # must come before anything initialises TensorFlow's runtime
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def resolve_precision(name: str) -> str:
    """``auto``: ``mixed_float16`` on a GPU, ``float32`` otherwise."""
    if name == "auto":
        return "mixed_float16" if tf.config.list_logical_devices("GPU") else "float32"
    return name


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


# Learning rate ------------------------------------------------------------------------------


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
    config: TrainConfig, schedule: WarmupSchedule, precision: str
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


# The trainer --------------------------------------------------------------------------------


@dataclass
class _Totals:
    """Sums over an epoch; divided once at the end."""

    loss: float = 0.0
    top1: float = 0.0
    top5: float = 0.0
    count: float = 0.0

    def add(self, values) -> None:
        loss, top1, top5, count = (float(v) for v in values)
        self.loss += loss
        self.top1 += top1
        self.top5 += top5
        self.count += count

    def means(self) -> tuple[float, float, float]:
        n = max(self.count, 1.0)
        return self.loss / n, self.top1 / n, self.top5 / n


class Trainer:
    """Train one `TrainConfig`. ``Trainer(config).fit()`` returns the final metrics.

    Use `Trainer.resume(run_dir)` to continue a run from its last checkpoint.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        verbose: bool = True,
        _resume_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        zoo.model_info(config.model)  # an unknown name fails here, naming the close ones
        self.config = config
        self.verbose = verbose
        self.resuming = _resume_dir is not None
        self.strategy = resolve_strategy(config.strategy)  # first: multi-worker needs that
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.precision = resolve_precision(config.precision)
        keras.config.set_dtype_policy(self.precision)
        self.chief = _is_chief(self.strategy)
        if _resume_dir is not None:
            self.run_dir = Path(_resume_dir)
        elif config.run_dir:
            self.run_dir = Path(config.run_dir)
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            safe = config.dataset.replace(":", "-").replace("/", "_").strip("_-")
            self.run_dir = Path(config.runs_dir) / f"{stamp}-{config.model}-{safe}"
        if self.chief and not self.resuming and (self.run_dir / "checkpoints").exists():
            raise FileExistsError(
                f"{self.run_dir} already holds a run; pass --resume {self.run_dir} to continue "
                "it, or choose another --run-dir."
            )

    @classmethod
    def resume(
        cls, run_dir: str | os.PathLike[str], *, epochs: int | None = None, verbose: bool = True
    ) -> Trainer:
        """A trainer that continues the run in ``run_dir`` (optionally for more epochs)."""
        path = Path(run_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a run directory (no config.json).")
        config = TrainConfig.load(path / "config.json")
        if epochs is not None:
            config = replace(config, epochs=epochs)
        return cls(config, verbose=verbose, _resume_dir=path)

    # Setup ----------------------------------------------------------------------------------

    def _say(self, message: str) -> None:
        if self.verbose and self.chief:
            print(message, flush=True)

    def _load_data(self) -> None:
        cfg = self.config
        options: dict[str, Any] = {}
        if cfg.dataset.startswith("tfds:"):
            options = {"data_dir": cfg.data_dir, "download": cfg.download}
        elif cfg.data_dir is not None:
            raise ValueError("data_dir applies to tfds:NAME datasets only.")
        self.data = pipelines.load(cfg.dataset, **options)
        if not getattr(self.data, "exact_sizes", True):
            raise ValueError(
                f"{cfg.dataset}: split sizes are only upper bounds (files were not "
                "verified), so epochs cannot be counted; load it with verify=True."
            )
        missing = {"train", "validation"} - set(self.data.splits)
        if missing:
            raise ValueError(f"{cfg.dataset} has no {', '.join(sorted(missing))} split.")
        info = zoo.model_info(cfg.model)
        side = cfg.image_size or (
            self.data.image_shape[0]
            if self.data.image_shape and self.data.image_shape[0] == self.data.image_shape[1]
            else info.input_shape[0]
        )
        self.image_size = (side, side)
        self.classes = self.data.num_classes
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.chief:
            self.stats = pipelines.load_or_compute_stats(
                self.data, self.run_dir, max_examples=STATS_EXAMPLES
            )
        else:  # the same figures; only the chief writes files
            self.stats = pipelines.compute_stats(self.data, max_examples=STATS_EXAMPLES)
        if cfg.augment == "auto":
            if cfg.dataset == "digits":
                augment = "cifar,flip=false"  # a mirrored digit is not a digit
            else:
                augment = "cifar" if side <= 64 else "imagenet"
        else:
            augment = cfg.augment
        self.augment = "none" if cfg.overfit_batches else augment

    def _dataset_fn(self, initial_epoch: int):
        cfg = self.config
        source: Any = self.data
        if cfg.overfit_batches:
            source = self.data.splits["train"].take(cfg.overfit_batches * cfg.batch_size)

        def fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            self._pipelines = context.num_input_pipelines
            return pipelines.make_train_dataset(
                source,
                image_size=self.image_size,
                global_batch_size=cfg.batch_size,
                augment=self.augment,
                mean=self.stats.mean,
                std=self.stats.std,
                seed=cfg.seed,
                input_context=context,
                num_classes=self.classes,
                pca=self.stats,
                initial_epoch=initial_epoch,
            )

        return fn

    def _eval_dataset(self, split: str):
        def fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            return pipelines.make_eval_dataset(
                self.data,
                image_size=self.image_size,
                batch_size=context.get_per_replica_batch_size(self.config.batch_size),
                mean=self.stats.mean,
                std=self.stats.std,
                input_context=context,
                split=split,
                cache=True,
            )

        return self.strategy.distribute_datasets_from_function(fn)

    def _build_model(self, steps_per_epoch: int) -> None:
        cfg = self.config
        self.model = zoo.create_model(
            cfg.model,
            input_shape=(*self.image_size, 3),
            classes=self.classes,
            width=cfg.width,
            dropout=cfg.dropout,
        )
        classifier = zoo.model_info(cfg.model).classifier
        head = [v for v in self.model.trainable_variables if v.path.startswith(classifier + "/")]
        backbone = [
            v for v in self.model.trainable_variables if not v.path.startswith(classifier + "/")
        ]
        if cfg.freeze_backbone:
            for layer in self.model.layers:
                layer.trainable = layer.name == classifier
            backbone = []
        total = cfg.epochs * steps_per_epoch
        schedule_args = dict(
            peak=cfg.learning_rate,
            warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
            total_steps=total,
            kind=cfg.schedule,
            decay_steps=max(1, round(cfg.decay_epochs * steps_per_epoch)),
            decay_rate=cfg.decay_rate,
        )
        self.schedule = WarmupSchedule(**schedule_args)
        # One optimizer for everything, or one per learning rate (head, backbone).
        split = bool(backbone) and cfg.backbone_lr_mult != 1.0
        if split and self.precision == "mixed_float16":
            raise ValueError(
                "backbone_lr_mult with mixed_float16 is not supported: the two optimizers would "
                "keep separate loss scales. Use mixed_bfloat16 or float32 for it."
            )
        self.groups: list[tuple[keras.optimizers.Optimizer, list]] = []
        if split:
            backbone_schedule = WarmupSchedule(**schedule_args, multiplier=cfg.backbone_lr_mult)
            self.groups.append((make_optimizer(cfg, self.schedule, self.precision), head))
            self.groups.append((make_optimizer(cfg, backbone_schedule, self.precision), backbone))
        else:
            self.groups.append(
                (make_optimizer(cfg, self.schedule, self.precision), head + backbone)
            )
        for optimizer, variables in self.groups:
            optimizer.build(variables)  # slots now, inside the strategy scope
        self.train_vars = [v for _, variables in self.groups for v in variables]
        self.decayed = [v for v in self.train_vars if v.path.endswith("/kernel")]
        self.epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        rng = [
            v for layer in self.model.layers for v in layer.variables if "seed_generator" in v.path
        ]
        self.checkpoint = tf.train.Checkpoint(
            model=self.model,
            optimizers=[opt for opt, _ in self.groups],
            epoch=self.epoch_var,
            rng=rng,
        )

    # Steps ----------------------------------------------------------------------------------

    def _per_example_loss(self, labels, logits):
        if labels.shape.rank == 1:
            labels = tf.one_hot(labels, self.classes)
        return keras.losses.categorical_crossentropy(
            labels, logits, from_logits=True, label_smoothing=self.config.label_smoothing
        )

    def _counts(self, labels, logits, per_example):
        targets = labels if labels.shape.rank == 1 else tf.argmax(labels, axis=-1)
        targets = tf.cast(targets, tf.int32)
        top1 = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), targets), tf.float32)
        )
        top5 = tf.reduce_sum(
            tf.cast(tf.math.in_top_k(targets, logits, min(5, self.classes)), tf.float32)
        )
        count = tf.cast(tf.shape(logits)[0], tf.float32)
        return tf.reduce_sum(per_example), top1, top5, count

    def _replica_train_step(self, images, labels):
        cfg = self.config
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            per_example = self._per_example_loss(labels, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=cfg.batch_size)
            if cfg.weight_decay_mode == "l2" and cfg.weight_decay > 0:
                l2 = tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in self.decayed])
                loss += tf.nn.scale_regularization_loss(cfg.weight_decay * l2)
            optimizer = self.groups[0][0]
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        grads = tape.gradient(scaled, self.train_vars)
        if cfg.clip_norm is not None:
            grads = self._clip(grads)
        start = 0
        for optimizer, variables in self.groups:
            optimizer.apply(grads[start : start + len(variables)], variables)
            start += len(variables)
        return self._counts(labels, logits, per_example)

    def _clip(self, grads):
        """Clip by the norm of the gradient summed over replicas (what the optimizer applies)."""
        context = tf.distribute.get_replica_context()
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        norm = tf.linalg.global_norm(total)
        optimizer = self.groups[0][0]
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            norm = norm / tf.cast(optimizer.dynamic_scale, norm.dtype)
        factor = tf.minimum(1.0, self.config.clip_norm / (norm + 1e-12))
        return [g * tf.cast(factor, g.dtype) for g in grads]

    def _replica_eval_step(self, images, labels, training: bool = False):
        logits = self.model(images, training=training)
        per_example = self._per_example_loss(labels, logits)
        return self._counts(labels, logits, per_example)

    def _make_steps(self, train_spec, eval_spec) -> None:
        jit = self.config.jit_compile
        train_replica = tf.function(self._replica_train_step, jit_compile=jit)
        eval_replica = tf.function(self._replica_eval_step, jit_compile=jit)
        strategy = self.strategy

        def reduce(values):
            return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in values)

        @tf.function(input_signature=[train_spec])
        def train_step(batch):
            return reduce(strategy.run(train_replica, args=batch))

        @tf.function(input_signature=[eval_spec])
        def eval_step(batch):
            return reduce(strategy.run(eval_replica, args=batch))

        self.train_step, self.eval_step = train_step, eval_step

    # The loop -------------------------------------------------------------------------------

    def setup(self) -> None:
        """Load the data, build the model and optimizer in the strategy's scope, restore a
        checkpoint (resume or ``init_from``) and trace nothing yet. Called by `fit`; runs once."""
        if getattr(self, "_set_up", False):
            return
        self._set_up = True
        cfg = self.config
        self._load_data()  # bad data fails before the run directory is made
        if self.chief and not self.resuming:
            (self.run_dir / "config.json").write_text(cfg.to_json() + "\n")
        n_train = (
            cfg.overfit_batches * cfg.batch_size
            if cfg.overfit_batches
            else self.data.num_examples["train"]
        )
        with self.strategy.scope():
            # The number of input pipelines (workers) is known once a dataset is distributed.
            self.strategy.distribute_datasets_from_function(self._dataset_fn(0))
            self.steps = pipelines.steps_per_epoch(
                n_train, cfg.batch_size, num_input_pipelines=self._pipelines
            )
            if self.steps < 1:
                raise ValueError(
                    f"batch_size {cfg.batch_size} is larger than the {n_train} training examples."
                )
            self._build_model(self.steps)
        ckpt_dir, best_dir = self._checkpoint_dirs()
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, ckpt_dir, max_to_keep=cfg.keep_checkpoints, checkpoint_name="epoch"
        )
        self.best_manager = tf.train.CheckpointManager(
            self.checkpoint, best_dir, max_to_keep=1, checkpoint_name="best"
        )
        self.history = self._start_history()
        if self.resuming:
            if self.manager.latest_checkpoint is None:
                raise FileNotFoundError(f"no checkpoint to resume in {ckpt_dir}")
            status = self.checkpoint.restore(self.manager.latest_checkpoint)
            status.assert_existing_objects_matched()
            self.history = [r for r in self.history if int(r["epoch"]) <= self._epoch()]
            self._say(f"resumed {self.run_dir} after epoch {self._epoch()}")
        elif cfg.init_from:
            self._init_from(cfg.init_from)
        self.start_epoch = self._epoch()
        with self.strategy.scope():
            self.train_ds = self.strategy.distribute_datasets_from_function(
                self._dataset_fn(self.start_epoch)
            )
            self.val_ds = self._eval_dataset("validation")
        self._make_steps(self.train_ds.element_spec, self.val_ds.element_spec)
        if self.chief:
            self._write_data_json()
        self.writer = (
            tf.summary.create_file_writer(str(self.run_dir / "tensorboard"))
            if self.chief
            else tf.summary.create_noop_writer()
        )

    def _epoch(self) -> int:
        """Epochs completed (the checkpointed counter; a mirrored variable under a strategy)."""
        return int(self.epoch_var.numpy())

    def fit(self) -> dict[str, Any]:
        """Train to ``config.epochs`` (from the last checkpoint when resuming) and return the
        final metrics, also written to ``metrics.json``.

        Raises:
            TrainingDiverged: the loss became NaN or infinite.
        """
        cfg = self.config
        self.setup()
        self._say(self._describe(self.start_epoch))
        if self.start_epoch == 0:
            with self.strategy.scope():
                first = next(
                    iter(self.strategy.distribute_datasets_from_function(self._dataset_fn(0)))
                )
            self._check_initial_loss(first)
            self.manager.save(checkpoint_number=0)  # a good checkpoint exists from the start
        history = self.history
        best = max((float(r["val_accuracy"]) for r in history), default=-1.0)
        iterator = iter(self.train_ds)
        for epoch in range(self.start_epoch, cfg.epochs):
            row = self._train_epoch(epoch, iterator, self.writer)
            val_loss, val_top1, val_top5 = self._evaluate(self.val_ds)
            row.update(val_loss=val_loss, val_accuracy=val_top1, val_top5=val_top5)
            history.append(row)
            self.epoch_var.assign(epoch + 1)
            self.manager.save(checkpoint_number=epoch + 1)
            if val_top1 > best:
                best = val_top1
                self.best_manager.save(checkpoint_number=epoch + 1)
            self._log_epoch(row, self.writer)
            if self.chief:
                self._write_history(history)
        metrics = self._finish(history)
        self._clean_worker_dirs()
        return metrics

    def _describe(self, start_epoch: int) -> str:
        cfg = self.config
        params = sum(int(np.prod(v.shape)) for v in self.model.trainable_variables)
        return (
            f"{cfg.model} ({params:,} trainable parameters) on {cfg.dataset}: "
            f"{self.data.num_examples['train']:,} training images of "
            f"{self.image_size[0]}x{self.image_size[1]}, {self.classes} classes; "
            f"{self.strategy.num_replicas_in_sync} replica(s), {self.precision}, "
            f"augment={self.augment!r}; epochs {start_epoch + 1}-{cfg.epochs} of "
            f"{self.steps} steps; run directory {self.run_dir}"
        )

    def _check_initial_loss(self, batch) -> None:
        """CS231n's sanity check: an untrained classifier's loss should be about ln(classes).

        Runs the training-mode forward pass (batch statistics) on one training batch, and puts
        the batch-norm statistics back afterwards, so the check changes nothing.
        """
        saved = [v.numpy() for v in self.model.non_trainable_variables]
        replica = tf.function(functools.partial(self._replica_eval_step, training=True))
        values = self.strategy.run(replica, args=batch)
        loss_sum, _, _, count = (
            float(self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)) for v in values
        )
        for variable, value in zip(self.model.non_trainable_variables, saved, strict=True):
            variable.assign(value)
        loss = loss_sum / max(count, 1.0)
        expected = math.log(self.classes)
        self._say(f"initial loss {loss:.3f} (ln({self.classes}) = {expected:.3f})")
        if not math.isfinite(loss) or abs(loss - expected) > INITIAL_LOSS_TOLERANCE:
            logger.warning(
                "initial loss %.3f is far from ln(%d) = %.3f: check the labels, the "
                "normalisation and the final layer's initialisation.",
                loss,
                self.classes,
                expected,
            )

    def _train_epoch(self, epoch: int, iterator, writer) -> dict[str, Any]:
        cfg = self.config
        totals = _Totals()
        progbar = keras.utils.Progbar(
            self.steps,
            stateful_metrics=["loss", "acc", "lr", "img/s"],
            verbose=1 if (self.verbose and self.chief and sys.stdout.isatty()) else 0,
        )
        self._say(f"epoch {epoch + 1}/{cfg.epochs}")
        start = time.perf_counter()
        for step in range(self.steps):
            before = self._kernels() if step == 0 else None
            values = self.train_step(next(iterator))
            totals.add(values)
            if not math.isfinite(float(values[0])):
                self._diverged(epoch, step, float(values[0]) / float(values[3]))
            if before is not None:
                self._log_update_ratios(before, epoch, writer)
            loss, acc, _ = totals.means()
            learning_rate = float(self.schedule(self.groups[0][0].iterations - 1))
            seen = (step + 1) * cfg.batch_size
            rate = seen / (time.perf_counter() - start)
            progbar.update(
                step + 1, [("loss", loss), ("acc", acc), ("lr", learning_rate), ("img/s", rate)]
            )
            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                self._say(
                    f"epoch {epoch + 1}/{cfg.epochs} step {step + 1}/{self.steps} "
                    f"loss {loss:.4f} accuracy {acc:.4f}"
                )
        seconds = time.perf_counter() - start
        loss, top1, top5 = totals.means()
        return {
            "epoch": epoch + 1,
            "learning_rate": learning_rate,
            "loss": loss,
            "accuracy": top1,
            "top5": top5,
            "images_per_second": self.steps * cfg.batch_size / seconds,
            "seconds": seconds,
        }

    def _diverged(self, epoch: int, step: int, loss: float) -> None:
        last = self.manager.latest_checkpoint or "none (no epoch had finished)"
        raise TrainingDiverged(
            f"loss became {loss} at epoch {epoch + 1}, step {step + 1} (learning rate "
            f"{float(self.schedule(self.groups[0][0].iterations)):.4g}); stopped. Last good "
            f"checkpoint: {last}. Lower --learning-rate, add --clip-norm or check the data."
        )

    def _kernels(self) -> list[np.ndarray]:
        return [np.array(v.numpy()) for v in self.decayed]

    def _log_update_ratios(self, before: list[np.ndarray], epoch: int, writer) -> None:
        """||update|| / ||weight|| per kernel for one step (CS231n: about 1e-3 is healthy)."""
        ratios = {}
        for var, old in zip(self.decayed, before, strict=True):
            norm = float(np.linalg.norm(old))
            if norm > 0:
                ratios[var.path] = float(np.linalg.norm(var.numpy() - old)) / norm
        with writer.as_default(step=epoch + 1):
            for path, ratio in ratios.items():
                tf.summary.scalar(f"update_ratio/{path}", ratio)
        self.last_update_ratios = ratios

    def _evaluate(self, dataset) -> tuple[float, float, float]:
        totals = _Totals()
        for batch in dataset:
            totals.add(self.eval_step(batch))
        return totals.means()

    def _log_epoch(self, row: dict[str, Any], writer) -> None:
        ratios = sorted(getattr(self, "last_update_ratios", {}).values())
        median = ratios[len(ratios) // 2] if ratios else float("nan")
        self._say(
            f"  loss {row['loss']:.4f} acc {row['accuracy']:.4f} | val_loss {row['val_loss']:.4f} "
            f"val_acc {row['val_accuracy']:.4f} val_top5 {row['val_top5']:.4f} | "
            f"lr {row['learning_rate']:.4g} | {row['images_per_second']:.0f} img/s | "
            f"update/weight median {median:.1e}"
        )
        with writer.as_default(step=int(row["epoch"])):
            for key in HISTORY_FIELDS[1:]:
                tf.summary.scalar(key, float(row[key]))
        writer.flush()

    # Files ----------------------------------------------------------------------------------

    def _checkpoint_dirs(self) -> tuple[str, str]:
        """The chief writes the real checkpoints; other workers write throw-away copies (every
        worker must take part in a multi-worker save)."""
        if self.chief:
            return str(self.run_dir / "checkpoints"), str(self.run_dir / "best")
        resolver = self.strategy.cluster_resolver
        tmp = self.run_dir / f".worker-{resolver.task_type}-{resolver.task_id}"
        self._worker_tmp = tmp
        return str(tmp / "checkpoints"), str(tmp / "best")

    def _clean_worker_dirs(self) -> None:
        tmp = getattr(self, "_worker_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    def _start_history(self) -> list[dict[str, Any]]:
        path = self.run_dir / "history.csv"
        if not self.resuming or not path.is_file():
            return []
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    def _write_history(self, history: list[dict[str, Any]]) -> None:
        tmp = self.run_dir / "history.csv.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows({k: row[k] for k in HISTORY_FIELDS} for row in history)
        os.replace(tmp, self.run_dir / "history.csv")
        _plot_curves(history, self.run_dir / "curves.png")

    def _write_data_json(self) -> None:
        data = {
            "dataset": self.config.dataset,
            "class_names": list(self.data.class_names),
            "input_shape": [*self.image_size, 3],
            "mean": list(self.stats.mean),
            "std": list(self.stats.std),
            "num_examples": dict(self.data.num_examples),
            "augment": self.augment,
            "precision": self.precision,
        }
        (self.run_dir / "data.json").write_text(json.dumps(data, indent=2) + "\n")

    def _finish(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        best_path = self.best_manager.latest_checkpoint
        if best_path:
            self.checkpoint.restore(best_path).expect_partial()
        best_row = max(history, key=lambda r: float(r["val_accuracy"]))
        metrics: dict[str, Any] = {
            "model": self.config.model,
            "dataset": self.config.dataset,
            "epochs": self.config.epochs,
            "best_epoch": int(best_row["epoch"]),
            "val_accuracy": float(best_row["val_accuracy"]),
            "val_top5": float(best_row["val_top5"]),
            "train_seconds": sum(float(r["seconds"]) for r in history),
            "images_per_second": float(np.median([float(r["images_per_second"]) for r in history])),
            "best_checkpoint": best_path,
            "run_dir": str(self.run_dir),
        }
        if "test" in self.data.splits:
            with self.strategy.scope():
                test_ds = self._eval_dataset("test")
            test_loss, test_top1, test_top5 = self._evaluate(test_ds)
            metrics.update(test_loss=test_loss, test_accuracy=test_top1, test_top5=test_top5)
        if self.chief:
            (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics

    # Transfer learning ----------------------------------------------------------------------

    def _init_from(self, source: str) -> None:
        """Copy weights by layer name from a run directory or a .keras file, where shapes
        match; the rest (typically a new classifier) keeps its fresh initialisation."""
        path = Path(source)
        if path.is_dir():
            src_config = TrainConfig.load(path / "config.json")
            src_data = json.loads((path / "data.json").read_text())
            src_model = zoo.create_model(
                src_config.model,
                input_shape=tuple(src_data["input_shape"]),
                classes=len(src_data["class_names"]),
                width=src_config.width,
            )
            found = tf.train.latest_checkpoint(path / "best") or tf.train.latest_checkpoint(
                path / "checkpoints"
            )
            if found is None:
                raise FileNotFoundError(f"no checkpoint in {path}/best or {path}/checkpoints")
            tf.train.Checkpoint(model=src_model).restore(found).expect_partial()
        elif path.suffix == ".keras" and path.is_file():
            src_model = keras.saving.load_model(path, compile=False)
        else:
            raise ValueError(f"init_from must be a run directory or a .keras file, got {source!r}.")
        copied, fresh = 0, []
        source_layers = {layer.name: layer for layer in src_model.layers}
        for layer in self.model.layers:
            other = source_layers.get(layer.name)
            if other is None or not layer.weights:
                continue
            if [w.shape for w in layer.weights] == [w.shape for w in other.weights]:
                layer.set_weights(other.get_weights())
                copied += 1
            else:
                fresh.append(layer.name)
        if copied == 0:
            raise ValueError(f"no layer of {source} matches {self.config.model}.")
        self._say(f"initialised {copied} layers from {source}; fresh: {', '.join(fresh) or '-'}")


def _plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [float(r["loss"]) for r in history], label="train")
    ax_loss.plot(epochs, [float(r["val_loss"]) for r in history], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [float(r["accuracy"]) for r in history], label="train")
    ax_acc.plot(epochs, [float(r["val_accuracy"]) for r in history], label="validation")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
