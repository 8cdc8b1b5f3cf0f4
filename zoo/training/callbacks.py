"""The engine's own output and checks, as Keras callbacks.

Each speaks the `keras.callbacks.Callback` protocol and gets the `Trainer` as ``self.trainer``
(set before ``on_train_begin``), so it reads what it needs from the engine's public attributes.
The loop calls them in this order at the end of an epoch: history, checkpoint, best weights,
TensorBoard, console, then the user's callbacks (``EarlyStopping``, ``CSVLogger``, KerasTuner's,
...), which see the same logs Keras's ``fit`` gives: ``loss``, ``accuracy``, ``top5``,
``val_loss``, ``val_accuracy``, ``val_top5``, ``learning_rate``.
"""

from __future__ import annotations

import io
import logging
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from zoo.training import rundir

if TYPE_CHECKING:
    from zoo.training.loop import Trainer

logger = logging.getLogger("zoo.train")

HISTORY_FIELDS = (
    "epoch", "learning_rate", "loss", "accuracy", "top5", "val_loss", "val_accuracy", "val_top5",
    "images_per_second", "seconds",
)  # fmt: skip
INITIAL_LOSS_TOLERANCE = 1.0  # warn when |initial loss - ln(classes)| exceeds this (nats)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


class EngineCallback(keras.callbacks.Callback):
    """A callback of the engine's: ``self.trainer`` is the `Trainer` that runs it."""

    trainer: Trainer


class HistoryWriter(EngineCallback):
    """``history.csv`` (one row per epoch, written atomically) and ``curves.png``."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        trainer = self.trainer
        trainer.rows.append({"epoch": epoch + 1, **(logs or {})})
        if trainer.chief:
            trainer.run.write_history(trainer.rows, HISTORY_FIELDS)
            plot_curves(trainer.rows, trainer.run.file(rundir.CURVES))


class EpochCheckpoint(EngineCallback):
    """Saves model, optimizers, epoch counter and dropout RNG after every epoch (after its
    history row, so every checkpoint has one)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.trainer.epoch_var.assign(epoch + 1)
        self.trainer.last_manager.save(checkpoint_number=epoch + 1)


class BestCheckpoint(EngineCallback):
    """Keeps the epoch that is best by ``monitor`` (``mode`` ``max`` or ``min``) in ``best/``.

    A tie goes to the later epoch: on a small validation set accuracy often ties, and the later
    weights have trained longer (on the default digits run, 180 validation images, epochs 7 and
    14 both scored 0.978)."""

    def __init__(self, monitor: str, mode: str) -> None:
        super().__init__()
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.best_epoch: int | None = None

    def better(self, value: float, than: float | None) -> bool:
        if not math.isfinite(value):
            return False
        return than is None or (value >= than if self.mode == "max" else value <= than)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """On resume: the best of the kept history; if that is the epoch just restored and
        ``best/`` missed it (a kill between the two saves), it is saved now."""
        for row in self.trainer.rows:
            value = float(row[self.monitor])
            if self.better(value, self.best):
                self.best, self.best_epoch = value, int(row["epoch"])
        saved = self.trainer.run.checkpoints(rundir.BEST)
        number = int(saved[0].rsplit("-", 1)[1]) if saved else None
        if self.best_epoch is not None and number != self.best_epoch:
            if self.best_epoch == self.trainer.start_epoch:
                self.trainer.best_manager.save(checkpoint_number=self.best_epoch)
            else:
                logger.warning(
                    "best/ holds epoch %s but the history's best is epoch %s, which is no "
                    "longer restorable; best/ will follow from here.",
                    number,
                    self.best_epoch,
                )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = float((logs or {})[self.monitor])
        if self.better(value, self.best):
            self.best, self.best_epoch = value, epoch + 1
            self.trainer.best_manager.save(checkpoint_number=epoch + 1)


class NaNGuard(EngineCallback):
    """Stops at the first call whose loss is NaN or infinite, naming the last good checkpoint."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("batch_loss", 0.0)
        if math.isfinite(loss):
            return
        trainer = self.trainer
        last = trainer.last_manager.latest_checkpoint or "none (no epoch had finished)"
        steps = int(logs.get("steps", 1))
        where = f"step {batch + 1}" if steps == 1 else f"steps {batch + 2 - steps}-{batch + 1}"
        raise TrainingDiverged(
            f"loss became {loss} at epoch {trainer.epoch + 1}, {where} (learning rate "
            f"{trainer.optimisation.learning_rate():.4g}); stopped. Last good checkpoint: "
            f"{last}. Lower --learning-rate, add --clip-norm or check the data."
        )


class InitialLossCheck(EngineCallback):
    """CS231n's check: an untrained classifier's loss on one training batch (training-mode
    forward pass, statistics put back) should be about ln(classes)."""

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        trainer = self.trainer
        if trainer.start_epoch != 0:
            return
        batch = next(iter(trainer.data.train_dataset(0)))
        loss = trainer.steps.loss_on(batch, training=True)
        expected = math.log(trainer.data.classes)
        self.initial_loss = loss
        trainer.say(f"initial loss {loss:.3f} (ln({trainer.data.classes}) = {expected:.3f})")
        if not math.isfinite(loss) or abs(loss - expected) > INITIAL_LOSS_TOLERANCE:
            logger.warning(
                "initial loss %.3f is far from ln(%d) = %.3f: check the labels, the "
                "normalisation and the final layer's initialisation.",
                loss,
                trainer.data.classes,
                expected,
            )


class UpdateRatios(EngineCallback):
    """||update|| / ||weight|| per kernel over the last call of each epoch, divided by the
    steps in that call (CS231n: about 1e-3 per step is healthy). ``ratios`` holds the last.
    (The last call, not the first: the first step of a warm-up has a learning rate of 0.)"""

    def __init__(self) -> None:
        super().__init__()
        self.ratios: dict[str, float] = {}
        self._before: list[np.ndarray] | None = None

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        trainer = self.trainer
        if batch + trainer.options.steps_per_execution >= trainer.data.steps_per_epoch:
            self._before = [np.array(v.numpy()) for v in self.trainer.optimisation.kernels]

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._before is None:
            return
        steps = max(int((logs or {}).get("steps", 1)), 1)
        ratios = {}
        for var, old in zip(self.trainer.optimisation.kernels, self._before, strict=True):
            norm = float(np.linalg.norm(old))
            if norm > 0:
                ratios[var.path] = float(np.linalg.norm(var.numpy() - old)) / norm / steps
        self.ratios, self._before = ratios, None

    @property
    def median(self) -> float:
        values = sorted(self.ratios.values())
        return values[len(values) // 2] if values else float("nan")


class TensorBoardLogger(EngineCallback):
    """Epoch scalars and update ratios to ``tensorboard/`` (the chief only)."""

    def __init__(self, ratios: UpdateRatios) -> None:
        super().__init__()
        self.ratios = ratios
        self.writer: Any = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        trainer = self.trainer
        self.writer = (
            tf.summary.create_file_writer(str(trainer.run.file("tensorboard")))
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
        trainer.say(f"epoch {epoch + 1}/{trainer.config.epochs}")
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
                f"epoch {trainer.epoch + 1}/{trainer.config.epochs} step {batch + 1}/"
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
    rundir.atomic_write_bytes(path, png.getvalue())
