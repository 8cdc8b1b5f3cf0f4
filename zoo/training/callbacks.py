"""The engine's own output and checks, as Keras callbacks.

Each speaks the `keras.callbacks.Callback` protocol and gets the training as ``self.trainer``
(set before ``on_train_begin``): what it may use of it is `TrainingView`, not the whole
`Trainer`.
The loop calls them in this order at the end of an epoch: the update ratios and gradient probe,
history, checkpoint, best weights, the babysitting checks, TensorBoard, console, early stopping
(`PatienceStop`), then the user's callbacks (``CSVLogger``, KerasTuner's, ...), which see the
same logs Keras's ``fit`` gives: ``loss``, ``accuracy``, ``top5``,
``val_loss``, ``val_accuracy``, ``val_top5``, ``learning_rate``.
"""

from __future__ import annotations

import io
import logging
import math
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import keras
import numpy as np
import tensorflow as tf

import zoo
from zoo.files import atomic_write_bytes
from zoo.monitor import Monitor
from zoo.training import rundir

if TYPE_CHECKING:  # the view's types; nothing here runs them
    from zoo.config import RunOptions, TrainConfig
    from zoo.training.data import TrainData
    from zoo.training.optim import Optimisation
    from zoo.training.rundir import RunCheckpoints, RunDirectory
    from zoo.training.step import Steps

logger = logging.getLogger("zoo.train")

HISTORY_FIELDS = (
    "epoch", "stage", "learning_rate", "loss", "accuracy", "top5", "val_loss", "val_accuracy",
    "val_top5", "images_per_second", "seconds",
)  # fmt: skip
INITIAL_LOSS_TOLERANCE = 1.0  # warn when |initial loss - ln(classes)| exceeds this (nats)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


class TrainingView(Protocol):
    """What the engine's callbacks may use of the training that runs them (`Trainer` is one).

    Read: the experiment and invocation (``config``, ``options``), the parts (``data``,
    ``model``, ``optimisation``, ``steps``, ``run``, ``checkpoints``), where training is
    (``epoch``, 0-based, the one running; ``start_epoch``; ``stage_name``), the peak
    ``learning_rate`` and whether this process is the ``chief``. Written: ``rows`` (the history
    of finished epochs, appended to by `HistoryWriter`), the checkpoints, the run's files and
    ``model.stop_training`` (Keras's own way to stop)."""

    config: TrainConfig
    options: RunOptions
    data: TrainData
    model: keras.Model
    optimisation: Optimisation
    steps: Steps
    run: RunDirectory
    checkpoints: RunCheckpoints
    epoch: int
    start_epoch: int
    learning_rate: float
    rows: list[dict[str, Any]]

    @property
    def chief(self) -> bool: ...

    @property
    def verbose(self) -> bool: ...

    @property
    def stage_name(self) -> str: ...

    def say(self, message: str) -> None:
        """Print ``message`` on the chief when verbose."""

    def rng_kept(self) -> AbstractContextManager[None]:
        """A block after which the dropout RNG is as before (for a check's extra pass)."""


class EngineCallback(keras.callbacks.Callback):
    """A callback of the engine's: ``self.trainer`` is the training that runs it."""

    trainer: TrainingView


class HistoryWriter(EngineCallback):
    """``history.csv`` (one row per epoch, written atomically) and ``curves.png``."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        trainer = self.trainer
        trainer.rows.append({"epoch": epoch + 1, "stage": trainer.stage_name, **(logs or {})})
        if trainer.chief:
            trainer.run.write_history(trainer.rows, HISTORY_FIELDS)
            plot_curves(trainer.rows, trainer.run.file(rundir.CURVES))


class EpochCheckpoint(EngineCallback):
    """Saves the epoch's checkpoint (`RunCheckpoints`: model, optimizers, epoch counter,
    dropout RNG) after its history row, so every checkpoint has one."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.trainer.checkpoints.save_epoch(epoch + 1)


class BestCheckpoint(EngineCallback):
    """Keeps the epoch that is best by ``rule`` (`zoo.monitor.Monitor`: a tie goes to the later
    epoch, a non-finite value never counts) in ``best/``."""

    def __init__(self, rule: Monitor) -> None:
        super().__init__()
        self.rule = rule
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """On resume: the best of the kept history; if that is the epoch just restored and
        ``best/`` missed it (a kill between the two saves), it is saved now."""
        row = self.rule.best(self.trainer.rows)
        if row is not None:
            self.best, self.best_epoch = float(row[self.rule.name]), int(row["epoch"])
        checkpoints = self.trainer.checkpoints
        number = checkpoints.best_saved()
        if self.best_epoch is not None and number != self.best_epoch:
            if self.best_epoch == self.trainer.start_epoch:
                checkpoints.save_best(self.best_epoch)
            else:
                logger.warning(
                    "best/ holds epoch %s but the history's best is epoch %s, which is no "
                    "longer restorable; best/ will follow from here.",
                    number,
                    self.best_epoch,
                )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = float((logs or {})[self.rule.name])
        if self.rule.better(value, self.best):
            self.best, self.best_epoch = value, epoch + 1
            self.trainer.checkpoints.save_best(epoch + 1)


class PatienceStop(EngineCallback):
    """``--early-stopping``: stops training once ``patience`` epochs have passed without a
    strict improvement of the monitored metric (`zoo.monitor.Monitor.last_improvement`, as
    Keras's ``EarlyStopping``), counted over the run's whole history, so a resumed run stops
    where an uninterrupted one would (Keras's would start its count again)."""

    def __init__(self, rule: Monitor, patience: int) -> None:
        super().__init__()
        self.rule, self.patience = rule, patience

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        trainer = self.trainer
        values = [float(row[self.rule.name]) for row in trainer.rows]  # this epoch's included
        if len(values) - self.rule.last_improvement(values) >= self.patience:
            trainer.model.stop_training = True
            trainer.say(f"Epoch {epoch + 1}: early stopping")  # Keras's own line


class NaNGuard(EngineCallback):
    """Stops at the first call whose loss is NaN or infinite, naming the last good checkpoint."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("batch_loss", 0.0)
        if math.isfinite(loss):
            return
        trainer = self.trainer
        last = trainer.checkpoints.latest or "none (no epoch had finished)"
        steps = int(logs.get("steps", 1))
        where = f"step {batch + 1}" if steps == 1 else f"steps {batch + 2 - steps}-{batch + 1}"
        raise TrainingDiverged(
            f"loss became {loss} at epoch {trainer.epoch + 1}, {where} (learning rate "
            f"{trainer.optimisation.learning_rate():.4g}); stopped. Last good checkpoint: "
            f"{last}. Lower --learning-rate, add --clip-norm or check the data."
        )


class TrainingCheckFailed(RuntimeError):
    """A babysitting check failed under ``strict_checks`` (the finished epochs are kept)."""


# The babysitting checks' thresholds (CS231n, "Babysitting the learning process").
CHECK_EPOCH = 3  # loss and accuracy are judged after this many epochs past the warm-up
LOSS_FRACTION = 0.9  # "learning": the epoch's training loss below this fraction of ln(classes)
# "Training too slowly": two thirds into the run, the training loss still above this fraction
# of ln(classes). vgg19_bn at width 0.5 on digits under the shared VGG-BN recipe was at 1.28
# (0.55 x ln 10, accuracy 0.44) at epoch 10 of 15 and ended at 0.681 test accuracy; the other
# 20 models ended at 0.885-1.0 training accuracy (the recipes table in docs/training.md).
SLOW_FRACTION, SLOW_AT = 0.5, 2 / 3
RATIO_LOW, RATIO_HIGH = 1e-4, 1e-2  # healthy update/weight per step: about 1e-3
NEAR_PEAK = 0.5  # ... judged on calls whose learning rate is at least this fraction of the peak
VANISHING = 1e-4  # the first kernel's gradient/weight below this fraction of the classifier's
EXPLODING = 1e3  # a probed gradient norm this many times its first epoch's, or not finite


def slow_check_epoch(total_epochs: int, warmup_epochs: float) -> int | None:
    """The epoch the ``slow_training`` check judges: two thirds into the run, when that is
    after the ``loss_not_falling`` check's epoch (None for runs too short to tell)."""
    epoch = math.ceil(SLOW_AT * total_epochs)
    return epoch if epoch > CHECK_EPOCH + math.ceil(warmup_epochs) else None


def training_too_slowly(loss: float, classes: int) -> bool:
    """Whether a training loss two thirds into the run says the model will not finish: above
    `SLOW_FRACTION` of ln(classes) (or not finite)."""
    return not loss <= SLOW_FRACTION * math.log(classes)


def chance_threshold(classes: int) -> float:
    """Training accuracy below this is "at chance": twice chance, at most chance + 0.1."""
    return min(2.0 / classes, 1.0 / classes + 0.1)


class UpdateRatios(EngineCallback):
    """||update|| / ||weight|| per step for each kernel, over the last call of each epoch.

    ``ratios`` holds the last measurement: for each kernel, the change over the call divided
    by the steps in it (CS231n: about 1e-3 per step is healthy). ``at_peak`` is their median
    when the learning rate stayed within `NEAR_PEAK` of the schedule's peak over the whole call
    (NaN otherwise): what the check judges, so that a warm-up or a decayed rate (whose
    updates momentum still carries from larger rates) is not mistaken for a bad one."""

    def __init__(self) -> None:
        super().__init__()
        self.ratios: dict[str, float] = {}
        self.at_peak: float = float("nan")
        self._scale: dict[str, float] = {}
        self._before: list[np.ndarray] | None = None
        self._lr_before = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # A backbone trained at backbone_lr_mult times the rate moves that much less: its
        # ratios are divided by it, so the median speaks of the peak rate the user chose.
        self._scale = {
            path: multiplier
            for path, multiplier in self.trainer.optimisation.multipliers.items()
            if multiplier > 0
        }

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        trainer = self.trainer
        if batch + trainer.options.steps_per_execution >= trainer.data.steps_per_epoch:
            self._before = [np.array(v.numpy()) for v in trainer.optimisation.kernels]
            self._lr_before = trainer.optimisation.learning_rate()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._before is None:
            return
        trainer = self.trainer
        steps = max(int((logs or {}).get("steps", 1)), 1)
        ratios = {}
        for var, old in zip(trainer.optimisation.kernels, self._before, strict=True):
            norm = float(np.linalg.norm(old))
            if norm > 0:
                change = float(np.linalg.norm(var.numpy() - old)) / norm / steps
                ratios[var.path] = change / self._scale.get(var.path, 1.0)
        self.ratios, self._before = ratios, None
        lowest = min(self._lr_before, trainer.optimisation.learning_rate())
        near = lowest >= NEAR_PEAK * trainer.learning_rate
        self.at_peak = self.median if near else float("nan")

    @property
    def median(self) -> float:
        values = sorted(self.ratios.values())
        return values[len(values) // 2] if values else float("nan")


class GradientNorms(EngineCallback):
    """The first and the last kernel's gradient norm relative to its weight norm, on one fixed
    un-augmented batch at the end of each epoch (one forward and backward pass; the dropout
    RNG and batch-norm statistics are left as they were). ``first``/``last`` hold the last."""

    def __init__(self) -> None:
        super().__init__()
        self.first = self.last = self.first_norm = self.last_norm = float("nan")
        self._batch: Any = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._batch = next(iter(self.trainer.data.calibration_dataset(0)))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        trainer = self.trainer
        head = zoo.model_info(trainer.config.model).classifier + "/kernel"
        kernels = [v for v in trainer.model.trainable_variables if v.path.endswith("/kernel")]
        last = [v for v in kernels if v.path == head]
        if not last or kernels[0] is last[0]:  # a frozen backbone: nothing to compare
            return
        pair = [kernels[0], last[0]]  # the input's side, the classifier
        with trainer.rng_kept():
            grads = trainer.steps.gradient_norms(self._batch, pair)
        weights = [float(np.linalg.norm(v.numpy())) for v in pair]
        self.first_norm, self.last_norm = grads
        self.first, self.last = (g / max(w, 1e-12) for g, w in zip(grads, weights, strict=True))


class Babysitter(EngineCallback):
    """CS231n's babysitting checks, each a one-line warning with the likely cause and what to
    try, recorded in ``checks.json`` (an error, `TrainingCheckFailed`, with ``strict``):

    - ``initial_loss``: an untrained model's loss on a training batch is not about ln(classes);
    - ``loss_not_falling``: after the warm-up and `CHECK_EPOCH` epochs, the training loss is not
      below `LOSS_FRACTION` of ln(classes);
    - ``chance_accuracy``: ... the training accuracy is at chance (`chance_threshold`);
    - ``slow_training``: two thirds into the run (`slow_check_epoch`) the training loss is
      still above `SLOW_FRACTION` of ln(classes) (`training_too_slowly`);
    - ``update_ratio``: an epoch's median update/weight ratio per step, at the peak learning
      rate, is outside [`RATIO_LOW`, `RATIO_HIGH`];
    - ``vanishing_gradients``: the first kernel's gradient/weight norm is below `VANISHING`
      times the classifier's (measured by `GradientNorms` on a fixed batch);
    - ``exploding_gradients``: either norm grew `EXPLODING` times since the first epoch, or is
      not finite.

    Each check warns once per run. ``warnings`` holds what fired."""

    def __init__(
        self, ratios: UpdateRatios, gradients: GradientNorms, *, strict: bool = False
    ) -> None:
        super().__init__()
        self.ratios, self.gradients, self.strict = ratios, gradients, strict
        self.warnings: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []
        self.initial_loss: float | None = None
        self.failure: TrainingCheckFailed | None = None
        self._first_norms: tuple[float, float] | None = None

    # Recording ------------------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        trainer = self.trainer
        if trainer.run.file(rundir.CHECKS).exists():  # resuming: keep what fired before
            saved = trainer.run.read_json(rundir.CHECKS)
            done = trainer.start_epoch
            self.warnings = [w for w in saved.get("warnings", []) if w["epoch"] <= done]
            self.epochs = [e for e in saved.get("epochs", []) if e["epoch"] <= done]
            if self.epochs and self.epochs[0].get("first_gradient") is not None:
                first = self.epochs[0]
                self._first_norms = (first["first_gradient"], first["last_gradient"])
        if trainer.start_epoch == 0:
            self._initial_loss()
        self._write()

    def warn(self, check: str, epoch: int, value: float, message: str) -> None:
        """Record and print one warning (or raise it under ``strict``); once per check."""
        if any(w["check"] == check for w in self.warnings):
            return
        self.warnings.append({"check": check, "epoch": epoch, "value": value, "message": message})
        self._write()
        trainer = self.trainer
        if trainer.chief:
            logger.warning("check %s: %s", check, message)
        if self.strict and self.failure is None:
            self.failure = TrainingCheckFailed(
                f"check {check} failed at epoch {epoch} (--strict-checks); the run stopped "
                f"there, its epochs kept in {trainer.run.path}: {message}"
            )
            if epoch == 0:  # before training: nothing to finish
                raise self.failure
            trainer.model.stop_training = True  # the epoch's other callbacks still run

    def _write(self) -> None:
        trainer = self.trainer
        if trainer.chief:
            trainer.run.write_json(
                rundir.CHECKS, _json_safe({"warnings": self.warnings, "epochs": self.epochs})
            )

    # The checks -----------------------------------------------------------------------------

    def _initial_loss(self) -> None:
        trainer = self.trainer
        batch = next(iter(trainer.data.train_dataset(0)))
        with trainer.rng_kept():
            loss = trainer.steps.loss_on(batch, training=True)
        classes = trainer.data.classes
        expected = math.log(classes)
        self.initial_loss = loss
        trainer.say(f"initial loss {loss:.3f} (ln({classes}) = {expected:.3f})")
        if not math.isfinite(loss) or abs(loss - expected) > INITIAL_LOSS_TOLERANCE:
            self.warn(
                "initial_loss",
                0,
                loss,
                f"the untrained model's loss {loss:.3f} is far from ln({classes}) = "
                f"{expected:.3f}: check the labels, the normalisation (--augment, the dataset's "
                "statistics) and the final layer's initialisation.",
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        trainer, logs = self.trainer, logs or {}
        done = epoch + 1
        classes = trainer.data.classes
        self.epochs.append(
            {
                "epoch": done,
                "loss": float(logs["loss"]),
                "accuracy": float(logs["accuracy"]),
                "update_ratio_median": self.ratios.median,
                "update_ratio_near_peak": self.ratios.at_peak,
                "first_gradient_to_weight": self.gradients.first,
                "last_gradient_to_weight": self.gradients.last,
                "first_gradient": self.gradients.first_norm,
                "last_gradient": self.gradients.last_norm,
            }
        )
        self._write()
        lower = "try --learning-rate auto, or python -m tuning.lr_find to see the loss against it"
        if done == CHECK_EPOCH + math.ceil(trainer.config.warmup_epochs):
            limit = LOSS_FRACTION * math.log(classes)
            loss, accuracy = float(logs["loss"]), float(logs["accuracy"])
            cause = self._cause()
            if not loss < limit:
                self.warn(
                    "loss_not_falling",
                    done,
                    loss,
                    f"after {done} epochs the training loss {loss:.3f} is not below "
                    f"{LOSS_FRACTION:g} x ln({classes}) = {limit:.3f}: the model is not "
                    f"learning; {cause}; {lower}.",
                )
            chance = chance_threshold(classes)
            if accuracy < chance:
                self.warn(
                    "chance_accuracy",
                    done,
                    accuracy,
                    f"after {done} epochs the training accuracy {accuracy:.3f} is at chance "
                    f"(1/{classes} = {1 / classes:.3f}; below {chance:.3f}): {cause}; {lower}.",
                )
        slow = slow_check_epoch(trainer.config.total_epochs, trainer.config.warmup_epochs)
        fired = {w["check"] for w in self.warnings}
        if done == slow and not fired & {"loss_not_falling", "chance_accuracy"}:
            loss, limit = float(logs["loss"]), SLOW_FRACTION * math.log(classes)
            if training_too_slowly(loss, classes):
                self.warn(
                    "slow_training",
                    done,
                    loss,
                    f"after {done} of {trainer.config.total_epochs} epochs the training loss "
                    f"{loss:.3f} is still above {SLOW_FRACTION:g} x ln({classes}) = {limit:.3f} "
                    f"(training accuracy {float(logs['accuracy']):.3f}): the model learns too "
                    f"slowly to finish; {self._cause()}; {lower}, or train longer.",
                )
        ratio = self.ratios.at_peak
        if math.isfinite(ratio) and not RATIO_LOW <= ratio <= RATIO_HIGH:
            high = ratio > RATIO_HIGH
            # A ratio of 0 (no kernel moved: skipped or underflowing updates) has no scaled pick.
            suggest = (
                f"--learning-rate {trainer.learning_rate * 1e-3 / ratio:.2g} or " if ratio else ""
            )
            self.warn(
                "update_ratio",
                done,
                ratio,
                f"the median update/weight ratio per step is {ratio:.1e} at the peak learning "
                f"rate {trainer.learning_rate:.3g} (healthy: about 1e-3, within "
                f"[{RATIO_LOW:g}, {RATIO_HIGH:g}]): the learning rate is likely too "
                + ("high" if high else "low")
                + f"; try {suggest}--learning-rate auto.",
            )
        self._gradients(done)

    def _gradients(self, done: int) -> None:
        grads = self.gradients
        if math.isnan(grads.first) and math.isnan(grads.last):
            return
        norms = (grads.first_norm, grads.last_norm)
        if self._first_norms is None:
            self._first_norms = norms
        growth = (
            max(
                (now / then if then > 0 else 1.0)
                for now, then in zip(norms, self._first_norms, strict=True)
            )
            if all(math.isfinite(n) for n in norms)
            else float("inf")
        )
        if growth > EXPLODING:
            self.warn(
                "exploding_gradients",
                done,
                growth,
                f"gradient norms grew {growth:.1e} times since the first epoch (first layer "
                f"{norms[0]:.1e}, classifier {norms[1]:.1e}): training is unstable; lower the "
                "learning rate, add --clip-norm, or use the batch-norm variant.",
            )
        if grads.last > 0:
            relative = grads.first / grads.last
        else:
            relative = 0.0 if grads.first == 0 else float("inf")
        if relative < VANISHING:
            self.warn(
                "vanishing_gradients",
                done,
                relative,
                f"the first layer's gradient/weight norm ({grads.first:.1e}) is {relative:.1e} "
                f"times the classifier's ({grads.last:.1e}): almost no gradient reaches the "
                "first layers (dead ReLUs after a too-high learning rate, or a deep network "
                "without batch norm); lower the learning rate or use the _bn variant.",
            )

    def _cause(self) -> str:
        ratio = self.ratios.at_peak
        if math.isfinite(ratio) and ratio > RATIO_HIGH:
            return f"updates are large (update/weight {ratio:.1e}): the learning rate is too high"
        if math.isfinite(ratio) and ratio < RATIO_LOW:
            return f"updates are small (update/weight {ratio:.1e}): the learning rate is too low"
        return "the learning rate is likely too high (a stuck loss) or too low (a slow one)"


class TensorBoardLogger(EngineCallback):
    """Epoch scalars, update ratios and the gradient probe to ``tensorboard/`` (the chief
    only)."""

    def __init__(self, ratios: UpdateRatios, gradients: GradientNorms | None = None) -> None:
        super().__init__()
        self.ratios, self.gradients = ratios, gradients
        self.writer: Any = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        trainer = self.trainer
        self.writer = (
            tf.summary.create_file_writer(str(trainer.run.file(rundir.TENSORBOARD)))
            if trainer.chief
            else tf.summary.create_noop_writer()
        )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        with self.writer.as_default(step=epoch + 1):
            for key in HISTORY_FIELDS[1:]:
                if key in (logs or {}):
                    tf.summary.scalar(key, float(logs[key]))
            for path, ratio in self.ratios.ratios.items():
                tf.summary.scalar(f"update_ratio/{path}", ratio)
            if self.gradients is not None and math.isfinite(self.gradients.first):
                tf.summary.scalar("gradient_to_weight/first_kernel", self.gradients.first)
                tf.summary.scalar("gradient_to_weight/last_kernel", self.gradients.last)
        self.writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.writer is not None:
            self.writer.close()


class ConsoleLogger(EngineCallback):
    """A progress bar on a terminal, a line every ``log_every`` steps, a line per epoch."""

    def __init__(self, ratios: UpdateRatios, log_every: int = 0) -> None:
        super().__init__()
        self.ratios, self.log_every = ratios, log_every
        self._progbar: keras.utils.Progbar | None = None
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        trainer = self.trainer
        trainer.say(f"epoch {epoch + 1}/{trainer.config.total_epochs}")
        self._progbar = keras.utils.Progbar(
            trainer.data.steps_per_epoch,
            stateful_metrics=["loss", "acc", "lr", "img/s"],
            verbose=1 if (trainer.verbose and trainer.chief and sys.stdout.isatty()) else 0,
        )
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        trainer, logs = self.trainer, logs or {}
        seen = (batch + 1) * trainer.config.batch_size
        rate = seen / max(time.perf_counter() - self._start, 1e-9)
        self._progbar.update(
            batch + 1,
            [
                ("loss", logs["loss"]),
                ("acc", logs["accuracy"]),
                ("lr", logs["learning_rate"]),
                ("img/s", rate),
            ],
        )
        steps = int(logs.get("steps", 1))
        if self.log_every and (batch + 1) // self.log_every > (batch + 1 - steps) // self.log_every:
            trainer.say(
                f"epoch {trainer.epoch + 1}/{trainer.config.total_epochs} step {batch + 1}/"
                f"{trainer.data.steps_per_epoch} loss {logs['loss']:.4f} "
                f"accuracy {logs['accuracy']:.4f}"
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        row = logs or {}
        self.trainer.say(
            f"  loss {row['loss']:.4f} acc {row['accuracy']:.4f} | val_loss {row['val_loss']:.4f} "
            f"val_acc {row['val_accuracy']:.4f} val_top5 {row['val_top5']:.4f} | "
            f"lr {row['learning_rate']:.4g} | {row['images_per_second']:.0f} img/s | "
            f"update/weight median {self.ratios.median:.1e}"
        )


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Loss and top-1 accuracy per epoch, training and validation, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure of its own with the Agg canvas: pyplot and the user's backend are left alone.
    epochs = [int(r["epoch"]) for r in history]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
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
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    atomic_write_bytes(path, png.getvalue())
